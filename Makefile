VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: test install lint demo bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip

install: $(PY)
	$(PIP) install -e ".[dev,edge]"

test: install
	$(PY) -m pytest -q --benchmark-disable

lint: install
	$(VENV)/bin/ruff check detr_core exporters bench cli tests

bench: install
	$(PY) -m pytest tests/benchmarks --benchmark-only

demo: install
	$(VENV)/bin/detrtool demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
