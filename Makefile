# Spigot — `make run` (local stack on moto) and `make test` (every test).
SHELL := /bin/bash
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
MOTO_PORT ?= 5000
export SPIGOT_PYTHON := $(PY)

.PHONY: run test lint venv build deploy bench clean

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

## run: moto on 127.0.0.1:$(MOTO_PORT) + `spigot dev` (receiver on 127.0.0.1:3000, sink on :3001). Ctrl-C stops both.
run: venv
	cargo build -p spigot-cli
	trap 'kill 0' EXIT; \
	$(PY) -m moto.server -H 127.0.0.1 -p $(MOTO_PORT) >/dev/null 2>&1 & \
	./target/debug/spigot dev --endpoint http://127.0.0.1:$(MOTO_PORT) $(ARGS)

## test: format, lints, every test (the e2e tests start their own moto server).
test: venv
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

clean:
	rm -rf $(VENV) target .spigot
