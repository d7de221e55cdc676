# MsgNet — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
SWIFT ?= swift
SHARED ?= $(abspath ../shared)
VENV ?= $(abspath .build/interop-venv)
WERROR := -Xswiftc -warnings-as-errors

.PHONY: deps build test lint format protos check-protos interop-venv demo bench

## deps: install the system packages the build needs (libprotobuf-c-dev, libssl-dev, protobuf-c-compiler, python3-venv)
deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build $(WERROR)

## protos: regenerate Sources/MsgNetControlC from Schemas/
protos: deps
	scripts/gen-protos.sh

check-protos: deps
	scripts/gen-protos.sh --check

lint:
	$(SWIFT) format lint --strict --recursive --parallel Package.swift Sources Tests Examples

format:
	$(SWIFT) format --in-place --recursive --parallel Package.swift Sources Tests Examples

## interop-venv: the py-libp2p 0.8.1 peer used by the interop tests
interop-venv:
	@set -o pipefail; $(SHARED)/interop/setup-venv.sh $(VENV) | tail -n 1

## test: generated code current, format lint, warnings-as-errors build, every test (interop included).
## Tests run one at a time (--no-parallel, about 100 s here): in parallel the suite took 65 s,
## but it started hundreds of networked tests at once on CI's 2 cores, and tests whose
## deadlines (dial, upgrade, request) a starved machine can miss failed about one run in four.
test: deps check-protos lint interop-venv
	$(SWIFT) build --build-tests $(WERROR)
	@set -o pipefail; MSGNET_INTEROP_PYTHON=$(VENV)/bin/python MSGNET_INTEROP_PEER=$(SHARED)/interop/peer.py \
	MSGNET_REQUIRE_INTEROP=1 $(SWIFT) test --skip-build --no-parallel 2>&1 | tee .build/test.log || { \
	  echo "=== failed tests (full log: .build/test.log) ==="; \
	  grep -E '✘|error:|Fatal|signal' .build/test.log | grep -v 'with 0 issues' | head -n 60; \
	  exit 1; }

## demo: two nodes connect, identify and ping; messages and a request over TCP and UDP; one handler, both paths
demo: deps
	$(SWIFT) build --product msgnet
	@scripts/demo.sh

## bench: the benchmark tool, release build (see BENCHMARKS.md)
bench: deps
	$(SWIFT) build -c release --product msgnet-bench
	.build/release/msgnet-bench all
