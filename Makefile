# Two commands do all the set-up on a fresh machine (README): `make test` and `make run`
# (`make run ARGS=--verbose` passes options on to `twistd paychan`).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
# Editable install in strict mode: Twisted's plugin scan finds twisted/plugins/ only
# through real directories on sys.path (see shared notes, DEPENDENCIES.md §4).
# Strict mode links files, so a new module needs a reinstall: the stamp depends on
# the list of sources, not just on setup.cfg.
SOURCES := $(shell find twisted_paychan twisted -name '*.py' -o -name '*.pyi' 2>/dev/null | sort)
STAMP   := $(VENV)/.installed-$(shell echo $(SOURCES) | cksum | cut -d' ' -f1)

.PHONY: test run lint typecheck diagrams proto bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]' --config-settings editable_mode=strict
	rm -f $(VENV)/.installed-*
	touch $@

# The system programs the suite drives (Chromium), the type check (mypy --strict, from
# setup.cfg), then the suite.
test: $(STAMP)
	scripts/system-deps.sh
	$(VENV)/bin/mypy twisted_paychan
	$(PY) -m pytest -q -n 2 tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy twisted_paychan

# doc/states.md from the lifecycle tables (a test fails when it is stale).
diagrams: $(STAMP)
	$(PY) -m twisted_paychan.channel.diagrams doc/states.md

proto: $(STAMP)
	$(PY) -m twisted_paychan.wire.regenerate

bench: $(STAMP)
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

run: $(STAMP)
	$(VENV)/bin/twistd --nodaemon --pidfile= paychan --data-dir paychan-data $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
