# condafleet.proxy -- every entry point of the project.
# `make demo` runs the main job on an embedded default; `make test` runs every test.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements/dev.txt requirements/constraints.txt | cksum | cut -d' ' -f1)

.PHONY: venv demo test unit sanity lint clean

venv: $(STAMP)

$(STAMP): requirements/dev.txt requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/dev.txt -c requirements/constraints.txt
	rm -f $(VENV)/.installed-* && touch $@

unit: venv
	$(BIN)/pytest -q tests/unit

clean:
	rm -rf $(VENV) collections tests/output docs/build
