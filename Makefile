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
	$(BIN)/geoseg synth --out demo/scene --size 2048 --seed 0 --overwrite
	$(BIN)/geoseg tile demo/scene/image.tif --labels demo/scene/parcels.gpkg \
		--boundary-width 1.5 --out demo/chips --overwrite
	$(BIN)/geoseg train demo/chips --classes boundary --base-filters 16 --epochs 15 \
		--batch-size 8 --out demo/model --overwrite
	$(BIN)/geoseg predict demo/scene/image.tif --model demo/model --out demo/pred.tif \
		--vectors demo/parcels.gpkg --mode parcels --threshold 0.5 --min-area 50 --overwrite

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_tile.py
	$(BIN)/python benchmarks/bench_train_input.py --filters 8
	$(BIN)/python benchmarks/bench_loss.py --quick
	$(BIN)/python benchmarks/bench_predict.py

clean:
	rm -rf demo
