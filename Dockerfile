# geoseg for NVIDIA GPUs (and CPUs): TensorFlow's pip CUDA wheels, no CUDA base image needed.
#   docker build -t geoseg .
#   docker run --gpus all -v $PWD:/data geoseg predict ortho.tif --model model/ --out pred.tif
# As a Dask worker (one per GPU), see the README:
#   docker run --gpus '"device=0"' --network host -v /shared:/shared --entrypoint dask geoseg \
#       worker tcp://SCHEDULER:8786 --nworkers 1 --nthreads 1
FROM python:3.11-slim

ARG EXTRAS="gpu"
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/geoseg
COPY pyproject.toml README.md ./
COPY geoseg ./geoseg
# one layer: the package and its dependencies (wheels only: the slim image has no compilers)
RUN pip install --only-binary=:all: ".${EXTRAS:+[$EXTRAS]}" \
    && geoseg --version \
    && useradd --create-home --uid 1000 geoseg

USER geoseg
WORKDIR /data
ENTRYPOINT ["geoseg"]
CMD ["--help"]
