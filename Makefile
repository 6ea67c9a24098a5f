# Two commands on a fresh machine: `make demo` and `make test`. Everything else is here for them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
FLINK_VENV := .venv-flink
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
WORK_DIR ?= work/demo
DEMO_ARGS ?=

.PHONY: install java-check test lint demo bench package deploy smoke clean

# Idempotent: re-runs only when a lock file changes (stamps inside the venvs).
install: java-check $(VENV)/.installed $(FLINK_VENV)/.installed $(FLINK_VENV)/share/fraud-streaming-operator.jar

java-check:
	@command -v java >/dev/null 2>&1 && command -v javac >/dev/null 2>&1 || { echo "A Java 17+ JDK (java and javac) is required for Spark and Flink and to build the Flink job's Java operator: install it (Debian/Ubuntu: 'sudo apt-get install -y openjdk-17-jdk-headless'; macOS: 'brew install openjdk@17') and put 'java' and 'javac' on PATH." >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -1); \
	 if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "Java 17+ is required, found '$$v' ($$(command -v java)). Install OpenJDK 17 (Debian/Ubuntu: 'sudo apt-get install -y openjdk-17-jdk-headless') or set JAVA_HOME." >&2; exit 1; fi

$(VENV)/.installed: requirements.lock
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: Python 3.11 is required (set PYTHON=/path/to/python3.11)." >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "uv==0.13.9"
	$(UV) pip sync -q --python $(PY) requirements.lock
	touch $@

$(FLINK_VENV)/.installed: streaming/requirements.lock $(VENV)/.installed
	test -x $(FLINK_VENV)/bin/python || $(PYTHON) -m venv $(FLINK_VENV)
	$(UV) pip install -q --python $(FLINK_VENV)/bin/python -r streaming/requirements.lock
	touch $@

# The Flink job's Java operator (streaming/operator_jar.py: javac against PyFlink's jars; clear error without javac).
$(FLINK_VENV)/share/fraud-streaming-operator.jar: $(shell find streaming/java -name '*.java') streaming/operator_jar.py $(FLINK_VENV)/.installed
	$(FLINK_VENV)/bin/python streaming/operator_jar.py $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -n 2 --dist loadgroup

demo: install
	$(PY) run_pipeline.py local --work-dir $(WORK_DIR) --approve $(DEMO_ARGS)

bench: install
	$(PY) benchmarks/run_all.py

package: install
	$(PY) infra/package.py --out dist

deploy: package
	bash infra/deploy.sh

# A real account, after `make deploy`: upsert, run, approve, send 1,000 events, check each was decided once.
smoke: install
	bash infra/smoke.sh

clean:
	rm -rf work dist .pytest_cache
