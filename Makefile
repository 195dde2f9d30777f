# The two commands everyone uses: `make sandbox` and `make test`. Both create .venv when it is missing
# or older than the requirements files, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQUIREMENTS := requirements-connector.txt requirements.txt requirements-dev.txt constraints.txt pyproject.toml

.PHONY: test lint sandbox bench clean control-plane

# The real control plane (kube-apiserver 1.29 and 1.33, etcd) built from Go modules into a cache
# outside the work tree (sandbox/controlplane/binaries.py); a no-op when cached, skipped without go.
GO := $(shell command -v go 2>/dev/null)

$(VENV)/.installed: $(REQUIREMENTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

control-plane: $(VENV)/.installed
	$(PY) -m sandbox.controlplane build

test: lint
ifneq ($(GO),)
	$(PY) -m sandbox.controlplane build
endif
	$(PY) -m pytest

sandbox: $(VENV)/.installed
ifneq ($(GO),)
	$(PY) -m sandbox.controlplane build
endif
	$(PY) -m sandbox $(SANDBOX_ARGS)

bench: $(VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
