# easycluster — the two commands of the README, plus their parts.
SHELL := /bin/bash
VENV  := .venv
FAB   := $(VENV)/bin/fab
PYTHON ?= python3

.PHONY: setup system-packages demo test unit dialyzer bench load soak lab-down clean

setup: system-packages $(VENV)/.installed

system-packages:
	@scripts/system-packages.sh

# The product (editable) with its test extra, and the lab (test equipment, a distribution of its own).
$(VENV)/.installed: pyproject.toml lab/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ./lab -e '.[test]'
	touch $@

# A 3-host lab, deployed: ends with a healthy 3-node, 3-master cluster. Safe to re-run.
# (fab finds the lab's inventory through fabric.yaml.)
demo: setup
	$(FAB) lab.up --nodes 3
	$(FAB) deploy
	$(FAB) status

# The whole suite, on labs of its own (brought up and torn down by the tests), in two streams:
# the session lab's modules on one worker, the modules with labs of their own on the other
# (tests/conftest.py groups them).
test: setup
	$(VENV)/bin/pytest -n 2 --dist loadgroup --durations=30

# Pure-logic tests only (no lab, no root).
unit: setup
	$(VENV)/bin/pytest -m "not lab"

# dialyzer over the plugin, against the OTP and ejabberd the lab hosts run (in a chroot of a copy
# of the lab's base image; the PLTs are cached in /var/cache/easycluster/dialyzer-bookworm).
dialyzer: setup
	scripts/dialyzer.sh

# The benchmark (docs/performance.md, docs/scaling.png): a lab of its own. BENCH_REPS, BENCH_USERS to scale
# (README: how long each takes).
bench: setup $(VENV)/.bench
	$(VENV)/bin/python bench/run.py

$(VENV)/.bench: pyproject.toml $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[bench]'
	touch $@

# Operations under real XMPP traffic, every message counted (docs/reliability.md): a lab of its
# own, ~10 min. LOAD_USERS, LOAD_RATE (messages/s), LOAD_RUNS (rolling restarts), LOAD_OPS to scale;
# LOAD_MONITORING=1 adds a monitoring host whose alerts must be about what each operation did
# (and draws docs/monitoring-rolling-restart.png: matplotlib, the bench's extra).
load: setup $(VENV)/.bench
	$(VENV)/bin/python load/run.py

# Faults drawn at random under make load's traffic, overlapping, every message accounted for
# (docs/reliability.md): a lab of its own, SOAK_MINUTES (30) of faults, ~40 min in all. SOAK_SEED
# repeats a run's faults; SOAK_DATABASE=replicated adds the database primary's power cut.
soak: setup
	$(VENV)/bin/python load/soak.py

lab-down:
	$(FAB) lab.down

clean: lab-down
	rm -rf $(VENV)
