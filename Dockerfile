# geoseg on CPU. For NVIDIA GPUs build with --build-arg EXTRAS=gpu (installs tensorflow[and-cuda]).
FROM python:3.11-slim

ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

WORKDIR /opt/geoseg
COPY pyproject.toml README.md ./
COPY geoseg ./geoseg
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && geoseg --version

WORKDIR /data
ENTRYPOINT ["geoseg"]
CMD ["--help"]
