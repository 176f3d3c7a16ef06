# Two commands for a newcomer: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test demo lint dashboards bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(BIN)/shadowtap demo

lint: $(STAMP)
	$(BIN)/ruff check .

dashboards: $(STAMP)
	$(BIN)/python grafana/generate.py

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/recorder.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/scoring.py

clean:
	rm -rf $(VENV) build dist *.egg-info
