# rlm-engine: the two commands most people need are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RLM    := $(VENV)/bin/rlm
export LITELLM_LOCAL_MODEL_COST_MAP := True

# Evaluation overrides: make eval-sniah MODEL=openai/gpt-4o-mini N=20 LENGTHS=8k,32k
MODEL     ?=
SUB_MODEL ?=
N         ?=
LENGTHS   ?=
EVAL_OUT  ?= out/eval
EVAL_ARGS  = $(if $(MODEL),--model $(MODEL)) $(if $(SUB_MODEL),--sub-model $(SUB_MODEL)) \
             $(if $(N),--n $(N)) $(if $(LENGTHS),--lengths $(LENGTHS))
# Benchmark data goes to $RLM_DATA_DIR or ~/.cache/rlm/data. Our own machines cannot reach the
# official sources and keep a mirror in ../shared/data: imported (verified) when present.
DATA_MIRROR ?= $(wildcard ../shared/data)
DATA_PULL    = $(RLM) data pull $(if $(DATA_MIRROR),--from $(DATA_MIRROR))

.PHONY: setup system-deps venv image model run test test-fast lint bench bench-sandbox \
        bench-growth bench-llm-batch bench-bridge bench-models bench-rlm bench-eval bench-local bench-anymodel bench-service bench-tools attacks eval-sniah \
        eval-oolong eval-pairs eval-codeqa eval-all data engine-image up down compose-smoke clean \
        infra-image up-scale down-scale compose-smoke-scale

## setup: install the project (in .venv) and everything the sandbox needs (Docker, debootstrap)
setup: system-deps venv

system-deps:
	bash scripts/install-system-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev,eval,bench,local,trained]'
	touch $@

## image: build the sandbox image offline (cached: seconds when nothing changed)
image: setup
	$(RLM) image build

## model: fetch and verify the embedded local model
model: venv
	$(RLM) model pull

## run: the demo on the embedded local model (needle in a ~30,000-character haystack)
run: venv image model
	$(RLM) demo

## test: the whole suite (real Docker, real kernels, real HTTP, the real local model)
# In parallel (pytest-xdist): most tests wait on containers, subprocesses and sockets, not the
# CPU. TEST_WORKERS=0 runs serially; tests/conftest.py says which tests share a worker.
# --durations: every full run lists its slowest tests, so the suite's cost stays visible.
TEST_WORKERS ?= 3
PYTEST_ARGS   = -n $(TEST_WORKERS) --dist loadgroup --durations=30
test: venv image model
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv image
	$(PY) -m pytest -m "not local_model" $(PYTEST_ARGS)

## lint: ruff (lint and format) on everything, mypy --strict on engine/ (pyproject [tool.mypy]),
## and the layering (imports point down: pyproject [tool.importlinter])
lint: venv
	$(VENV)/bin/ruff check engine tests benchmarks sandbox-image
	$(VENV)/bin/ruff format --check engine tests benchmarks sandbox-image
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## attacks: the catalogue of attacks on real sandboxes and a real service (and the earlier escape suite), then its table
attacks: venv image
	rm -f out/attacks/results.jsonl
	$(PY) -m pytest tests/attacks tests/test_sandbox_isolation.py -q; status=$$?; $(PY) -m tests.attacks.table; exit $$status

## bench: every benchmark; each prints numbers, asserts nothing, writes out/bench/<name>.json
bench: bench-sandbox bench-growth bench-llm-batch bench-bridge bench-models bench-rlm \
       bench-service bench-tools

## bench-sandbox: ours beside the rlms package's DockerREPL (installed into out/bench/peer-venv)
bench-sandbox: venv image
	$(PY) benchmarks/bench_sandbox.py $(BENCH_SANDBOX_ARGS)

## bench-growth: ceilings, and start/cell/memory with 1-40 live sandboxes (+ out/bench/growth.png)
bench-growth: venv image
	$(PY) benchmarks/bench_growth.py $(BENCH_GROWTH_ARGS)

## bench-llm-batch: llm_batch through sandbox + bridge vs direct calls (BENCH_LLM_BATCH_ARGS="--api-base ...")
bench-llm-batch: venv image
	$(PY) benchmarks/bench_llm_batch.py $(BENCH_LLM_BATCH_ARGS)

bench-bridge: venv
	$(PY) benchmarks/bench_bridge.py

bench-models: venv
	$(PY) benchmarks/bench_models.py

bench-rlm: venv image
	$(PY) benchmarks/bench_rlm_loop.py

bench-service: venv image
	$(PY) benchmarks/bench_service.py

bench-tools: venv image
	$(PY) benchmarks/bench_tools.py

bench-eval: venv
	$(DATA_PULL) sniah oolong
	$(PY) benchmarks/bench_eval.py

bench-local: venv image model
	$(PY) benchmarks/bench_local.py $(BENCH_LOCAL_ARGS)

## bench-anymodel: S-NIAH/OOLONG/Pairs, RLM vs base, embedded and served (alias, engine defaults)
bench-anymodel: venv image model
	$(DATA_PULL) sniah oolong oolong-pairs
	$(PY) benchmarks/bench_anymodel.py $(BENCH_ANYMODEL_ARGS)

eval-sniah: venv image
	$(DATA_PULL) sniah
	$(RLM) eval sniah --out $(EVAL_OUT)/sniah $(EVAL_ARGS)

eval-oolong: venv image
	$(DATA_PULL) oolong
	$(RLM) eval oolong --out $(EVAL_OUT)/oolong $(EVAL_ARGS)

eval-pairs: venv image
	$(DATA_PULL) oolong-pairs
	$(RLM) eval oolong-pairs --out $(EVAL_OUT)/pairs $(EVAL_ARGS)

eval-codeqa: venv image
	$(DATA_PULL) codeqa
	$(RLM) eval codeqa --out $(EVAL_OUT)/codeqa $(EVAL_ARGS)

eval-all: eval-sniah eval-oolong eval-pairs eval-codeqa

## data: fetch (or import from the mirror) and verify every benchmark's source data
data: venv
	$(DATA_PULL)

## up / down: the service with docker-compose (engine + local model; `--profile gpu` adds vLLM)
SERVICES ?=
engine-image: venv image
	$(PY) deploy/build.py

up: engine-image
	docker-compose -p rlm-engine up -d $(SERVICES)

down:
	docker-compose -p rlm-engine down

## compose-smoke: make up, a replay-driven job through the API, make down, nothing left
compose-smoke: venv image
	$(PY) deploy/smoke.py

## up-scale / down-scale: PostgreSQL, two engine replicas and nginx (profile scale, docs/scaling.md)
infra-image: venv image
	$(PY) deploy/infra.py

# The local model too, unless RLM_API_BASE points the replicas elsewhere: SCALE_SERVICES=...
SCALE_SERVICES ?= postgres engine-1 engine-2 lb model
up-scale: engine-image infra-image
	docker-compose -p rlm-engine --profile scale up -d $(SCALE_SERVICES)

down-scale:
	docker-compose -p rlm-engine --profile scale down

## compose-smoke-scale: the scale profile up, jobs spread over both replicas, one stopped, down
compose-smoke-scale: venv image
	$(PY) deploy/smoke_scale.py

clean:
	$(RLM) sandbox reap || true
	rm -rf out bench-out .pytest_cache
