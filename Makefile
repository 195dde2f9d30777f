# The two commands everyone uses: `make sandbox` and `make test`. Both create .venv when it is missing
# or older than the requirements files, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQUIREMENTS := requirements-connector.txt requirements.txt requirements-dev.txt constraints.txt pyproject.toml

.PHONY: test lint sandbox bench clean control-plane pulumi-engine console-player chromium

# The console's session player: asciinema-player from npm, pinned by connector/console/player's lock
# file, copied into the served static dir (git-ignored, never committed).
PLAYER_DIR := connector/console/player
PLAYER_STATIC := connector/console/static/player
PLAYER_BUNDLE := $(PLAYER_DIR)/node_modules/asciinema-player/dist/bundle

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

# The real Pulumi engine (the pulumi CLI and pulumi-resource-kubernetes) built from Go modules into a
# cache outside the work tree (sandbox/pulumi_engine/binaries.py), for tests/integration/test_real_pulumi_engine.py.
pulumi-engine: $(VENV)/.installed
	$(PY) -m sandbox.pulumi_engine build

$(PLAYER_STATIC)/asciinema-player.min.js: $(PLAYER_DIR)/package.json $(PLAYER_DIR)/package-lock.json
	cd $(PLAYER_DIR) && npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p $(PLAYER_STATIC)
	cp $(PLAYER_BUNDLE)/asciinema-player.min.js $(PLAYER_BUNDLE)/asciinema-player.css $(PLAYER_STATIC)/

console-player: $(PLAYER_STATIC)/asciinema-player.min.js

# The browser of the console's tests (Debian's chromium); they skip, saying why, when it is missing.
chromium:
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

# With Go, the real control plane and the real Pulumi engine are built (or found in the cache) first.
# A Pulumi engine that cannot be built does not stop the run: its test skips, saying why, and the
# build's one line says what failed.
test: lint console-player
ifneq ($(GO),)
	$(PY) -m sandbox.controlplane build
	-$(PY) -m sandbox.pulumi_engine build
endif
	$(PY) -m pytest

sandbox: $(VENV)/.installed console-player
ifneq ($(GO),)
	$(PY) -m sandbox.controlplane build
endif
	$(PY) -m sandbox $(SANDBOX_ARGS)

bench: $(VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
