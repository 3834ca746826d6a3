# fngate: every target sets itself up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test test-all bench loadtest-smoke clean

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

# Reinstall only when the project's declared dependencies change.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test,bench,load]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/fngate serve $(ARGS)

test: install
	$(call ensure-tools,redis-server:redis-server curl:curl)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: install
	$(call ensure-tools,redis-server:redis-server curl:curl)
	$(PY) -m pytest -q -m '' $(PYTEST_ARGS)

bench: install
	$(call ensure-tools,nginx:nginx wrk:wrk h2load:nghttp2-client nghttpx:nghttp2-proxy haproxy:haproxy redis-server:redis-server taskset:util-linux)
	$(PY) -m fngate.bench $(ARGS)

loadtest-smoke: install
	$(VENV)/bin/fngate loadtest smoke $(ARGS)

clean:
	rm -rf $(VENV) .fngate .pytest_cache build *.egg-info
