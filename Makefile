VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench bench-parcels bench-setup clean

install: $(STAMP)

# Reinstall when the package metadata changes (a stale .venv).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[test,hed]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check geoseg tests benchmarks
	$(BIN)/ruff format --check geoseg tests benchmarks

demo: $(STAMP)
	$(BIN)/geoseg run pipelines/demo.yaml
	@echo "outputs in demo/: pred.tif (probabilities, COG), parcels.gpkg, preview.png," \
		"scores-pixels.json, scores-parcels.json, model/, chips/, scene/"

# Every benchmark prints ratios against a baseline run in the same script (docs/benchmarks.md).
bench: $(STAMP) bench-setup
	$(BIN)/python benchmarks/bench_tile.py
	$(BIN)/python benchmarks/bench_train_input.py --filters 8
	$(BIN)/python benchmarks/bench_loss.py --quick
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_vectorize.py
	$(BIN)/python benchmarks/bench_precision.py
	$(BIN)/python benchmarks/bench_encoders.py
	$(BIN)/python benchmarks/bench_gpu.py

# Accuracy on real data: the parcel recipes on the Danish parcels and a synthetic scene (about
# 16 minutes), the crop types of the Danish register (about 4 minutes).
bench-parcels: $(STAMP)
	$(BIN)/python benchmarks/bench_parcels.py
	$(BIN)/python benchmarks/bench_multiclass.py

# GDAL's own tiler (gdal_retile.py), the baseline of bench_tile.py, from Debian/Ubuntu packages.
bench-setup:
	@command -v gdal_retile.py >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q gdal-bin python3-gdal; \
	} || echo "gdal-bin not installed: bench_tile.py runs without its gdal_retile.py baseline"

clean:
	rm -rf demo
