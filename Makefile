# Two entry points for a newcomer: `make demo` (generate an image) and `make test`.
# Each one sets itself up first (scripts/setup.sh: system font, .venv, editable install).
VENV ?= .venv
PY := $(VENV)/bin/python
LDMKIT := $(VENV)/bin/ldmkit

.PHONY: setup demo test test-fast clean-demo

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"
