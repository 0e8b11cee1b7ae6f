# Two entry points for a fresh machine (see README):
#   make demo   set up the venv and run the main job (`eabench reproduce` on the synthetic benchmark)
#   make test   set up the venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the builds this workplace serves from local disk; any torch >= 2.4 works.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS) || $(BIN)/python -m pip install -q torch torchvision
	$(BIN)/python -m pip install -q -e '.[dev,postgres]'
	touch $@

demo: setup
	$(BIN)/eabench reproduce

test: setup
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

lint: setup
	$(BIN)/ruff check harness variants studies reports tests bench

clean:
	rm -rf $(VENV) runs data .pytest_cache
