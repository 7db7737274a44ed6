# Spigot — `make run` (local stack on moto) and `make test` (every test).
SHELL := /bin/bash
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
MOTO_PORT ?= 5000
REGION ?= us-east-1
export SPIGOT_PYTHON := $(PY)
export SAM_CLI_TELEMETRY := 0
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run stop install test lint venv build deploy bench bench-baseline bench-coldstart clean audit
DENY := $(abspath .tools)/bin/cargo-deny

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

$(VENV)/.build-tools: $(VENV)/.installed requirements-build.txt
	$(VENV)/bin/pip install --quiet -r requirements-build.txt
	touch $@

venv: $(VENV)/.installed

# cargo-deny, pinned, built once into .tools (a few minutes on a fresh machine).
$(DENY):
	cargo install --locked --quiet cargo-deny --version 0.20.2 --root $(abspath .tools)

## run: moto (tools/moto_server.py: moto with SQS's FIFO order) on 127.0.0.1:$(MOTO_PORT), kept across restarts, + `spigot dev` (receiver on 127.0.0.1:3000, sink on :3001). Ctrl-C stops spigot dev only; `make stop` ends moto.
run: venv
	cargo build -p spigot-cli
	$(PY) tools/run.py --moto-port $(MOTO_PORT) --python $(PY) -- $(ARGS)

## install: the `spigot` CLI and `spigot-agent` on your PATH (cargo install).
install:
	cargo install --locked --path crates/cli
	cargo install --locked --path crates/agent

## stop: end the moto server `make run` started (the local buffer, filters and state go with it).
stop:
	@$(PY) tools/run.py --stop

## test: format, lints (Rust and CloudFormation), every test (the e2e tests start their own moto server).
test: venv lint
	cargo test --workspace

lint: venv $(DENY)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(DENY) check bans licenses sources
	$(VENV)/bin/cfn-lint template.yaml examples/*.yaml
	AWS_DEFAULT_REGION=$(REGION) $(VENV)/bin/sam validate --lint --template template.yaml

## audit: RustSec advisories (needs the advisory database from the network; not in make test).
audit: $(DENY)
	$(DENY) check advisories

## build: arm64 bootstrap binaries of the five functions (sam build, cargo-lambda + zig).
build: $(VENV)/.build-tools
	sam build --template template.yaml
	@ls -l .aws-sam/build/*/bootstrap

## deploy: sam deploy with samconfig.toml (set your parameters there or with ARGS=--parameter-overrides ...).
deploy: build
	sam deploy $(ARGS)

## bench: every benchmark of BENCHMARKS.md; criterion compares with the saved baseline `main` when there is one.
bench: venv
	cargo build --release -p spigot-cli -p spigot-receiver -p spigot-drainer -p spigot-evaluator -p spigot-filter-resource -p spigot-reconciler
	cargo bench -p spigot-bench --bench hot_paths -- $(if $(wildcard target/criterion/*/main),--baseline main,--save-baseline main)
	cargo bench -p spigot-bench --bench python_baseline
	cargo bench -p spigot-bench --bench drain
	cargo bench -p spigot-bench --bench coldstart
	cargo bench -p spigot-bench --bench load

## bench-baseline: record the current criterion figures as baseline `main`.
bench-baseline: venv
	cargo bench -p spigot-bench --bench hot_paths -- --save-baseline main

## bench-coldstart: only the cold start harness.
## (COLDSTART_BEFORE=other-checkout/target/release puts another build's binaries beside these.)
bench-coldstart: venv
	cargo build --release -p spigot-cli -p spigot-receiver -p spigot-drainer -p spigot-evaluator -p spigot-filter-resource -p spigot-reconciler
	cargo bench -p spigot-bench --bench coldstart

clean:
	rm -rf $(VENV) target .spigot .aws-sam .tools
