# fngate: every target sets itself up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run lint test test-all chaos bench bench-instr loadtest-smoke clean

# ensure-tools: make sure system tools exist (as "tool:debian-package" pairs);
# install the missing ones with apt-get when root, else say how and stop.
define ensure-tools
	@missing=""; for pair in $(1); do tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$tool >/dev/null 2>&1 || [ -x /usr/sbin/$$tool ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" -ne 0 ]; then \
	    echo "fngate: missing system packages:$$missing"; \
	    echo "install them with: sudo apt-get install -y$$missing"; exit 1; fi; \
	  echo "fngate: installing$$missing with apt-get"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null && \
	  apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi
endef

# Reinstall only when the project's declared dependencies change. This step installs the dependencies
# and the editable finder only (FNGATE_PURE_PYTHON=1 at build time: no extensions); the next one builds them.
$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	FNGATE_PURE_PYTHON=1 $(PY) -m pip install -q -e '.[test,lint,bench,load,compile]'
	@touch $(STAMP)

# The compiled data plane (pyproject.toml [tool.fngate] compiled), built in place next to its sources
# with the `compile` extra's Cython: incremental (build/ keeps the C and objects), so after an edit under
# proxy/ only that module is rebuilt. (A plain `pip install [-e] .` builds them too, isolated, from
# [build-system], but from scratch every time.) An extension older than its source runs as Python
# until rebuilt (fngate/pure_python.py). Without a C compiler the modules stay Python.
BUILT := $(VENV)/.compiled
$(BUILT): $(STAMP) $(shell find proxy -name '*.py' -o -name '*.pxd')
	$(PY) setup.py -q build_ext --inplace
	@touch $(BUILT)

install: $(BUILT)

run: install
	$(VENV)/bin/fngate serve $(ARGS)

# mypy reads the import layout (fngate.proxy is proxy/, ...) from a tree of links under build/typecheck,
# as it cannot follow setuptools' editable finder; its report names the real files again.
TYPECHECK := build/typecheck
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/fngate
	@for d in proxy control backends bench loadtests; do ln -s ../../../$$d $(TYPECHECK)/fngate/$$d; done
	@for f in fngate/*.py; do ln -s ../../../$$f $(TYPECHECK)/$$f; done
	@echo "$(VENV)/bin/mypy  # [tool.mypy]: strict on proxy/ and control/"
	@$(VENV)/bin/mypy > $(TYPECHECK).log 2>&1; rc=$$?; \
	  sed -E 's#^$(TYPECHECK)/fngate/(proxy|control|backends|bench|loadtests)/#\1/#; s#^$(TYPECHECK)/##' $(TYPECHECK).log; exit $$rc

# chromium + chromium-driver: the console's browser test; prometheus (+ promtool): the dashboard query test
TEST_TOOLS := redis-server:redis-server curl:curl chromium:chromium chromedriver:chromium-driver prometheus:prometheus promtool:prometheus

# The whole suite against the compiled data plane, then tests/proxy (with tests/proxy/grpc) once more
# as pure Python (FNGATE_PURE_PYTHON=1). Line coverage of proxy/ and control/ ([tool.coverage] in
# pyproject.toml; fully covered files are left out): compiled modules are not traced, so their lines
# count from the pure pass, which appends to the first pass's data.
# The pure pass adds ~2.7 min (mostly the tests' own timeouts and waits); PURE_TESTS= narrows it.
PURE_TESTS ?= tests/proxy
# Most tests wait on real processes (servers starting, timeouts running out) rather than
# compute, so two worker processes finish the suite sooner even on two cores. A file stays
# on one worker (its module fixtures are built once); TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: install
	$(call ensure-tools,$(TEST_TOOLS))
	$(PY) -m pytest -q $(XDIST) --cov --cov-report= $(PYTEST_ARGS)
	@echo "fngate: $(PURE_TESTS) once more as pure Python (FNGATE_PURE_PYTHON=1)"
	FNGATE_PURE_PYTHON=1 $(PY) -m pytest -q $(XDIST) --cov --cov-append --cov-report=term $(PURE_TESTS) $(PYTEST_ARGS)

test-all: install
	$(call ensure-tools,$(TEST_TOOLS))
	$(PY) -m pytest -q -m '' $(PYTEST_ARGS)

# The fault-injection suite at full length (tests/chaos; make test runs each case short).
chaos: install
	$(call ensure-tools,redis-server:redis-server curl:curl)
	$(PY) -m pytest -q -m chaos tests/chaos $(PYTEST_ARGS)

bench: install
	$(call ensure-tools,nginx:nginx wrk:wrk h2load:nghttp2-client nghttpx:nghttp2-proxy haproxy:haproxy redis-server:redis-server taskset:util-linux)
	$(PY) -m fngate.bench $(ARGS)

# Instructions per request of the gateway process under callgrind (bench/instructions.py): the
# figure to compare changes of the hot path with on a shared, loaded machine, where wall-clock
# benchmarks mean nothing. ARGS: --requests N, --protocols h1,h2, --top K.
bench-instr: install
	$(call ensure-tools,valgrind:valgrind callgrind_control:valgrind h2load:nghttp2-client)
	$(PY) -m fngate.bench.instructions $(ARGS)

loadtest-smoke: install
	$(VENV)/bin/fngate loadtest smoke $(ARGS)

clean:
	rm -rf $(VENV) .fngate .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find proxy -name '*.so' -delete
