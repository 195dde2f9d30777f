# The two commands everyone uses: `make sandbox` and `make test`. Both create .venv when it is missing
# or older than the requirements files, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQUIREMENTS := requirements-connector.txt requirements.txt requirements-dev.txt constraints.txt pyproject.toml

.PHONY: test lint sandbox bench clean

$(VENV)/.installed: $(REQUIREMENTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

sandbox: $(VENV)/.installed
	$(PY) -m sandbox $(SANDBOX_ARGS)

bench: $(VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
