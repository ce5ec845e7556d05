# The two commands that work on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest openclaw-test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: install
	$(BIN)/clearance demo --config examples/enterprise/clearance.yaml \
		--config examples/enterprise/risk.yaml $(if $(FAKE),--fake $(FAKE))

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q

test: lint typecheck pytest openclaw-test

# The OpenClaw plugin (TypeScript): its tests start a real `clearance serve` from .venv.
openclaw-test: install
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
	  && node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 3) ? 0 : 1)' || { \
	  echo "make openclaw-test: Node.js 20.3 or newer with npm is required for integrations/openclaw"; exit 1; }
	cd integrations/openclaw && npm ci --no-audit --no-fund && CLEARANCE_BIN=$(abspath $(BIN)/clearance) npm test

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .clearance .pytest_cache .mypy_cache .ruff_cache
	rm -rf integrations/openclaw/node_modules integrations/openclaw/dist
