VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

install: $(STAMP)

# Reinstall when the package metadata changes (a stale .venv).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[test]"
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

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_tile.py
	$(BIN)/python benchmarks/bench_train_input.py --filters 8
	$(BIN)/python benchmarks/bench_loss.py --quick
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_vectorize.py

clean:
	rm -rf demo
