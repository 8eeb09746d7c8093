# keyops.runbooks: the two set-up commands and the targets behind them.
SHELL := /bin/bash
PY := .venv/bin/python
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/.venv/bin:$(PATH)
LAB := $(PY) lab/keyops_lab.py

.PHONY: reliability-quick demo test bootstrap bootstrap-test lab-up lab-seed lab-status lab-down lint sanity unit integration molecule bench bench-smoke reliability build

## demo: set up, start and seed the lab, run playbooks/site.yml against it
demo: bootstrap lab-up lab-seed
	source "$${KEYOPS_LAB_DIR:-.lab}/env.sh" && KEYOPS_AUDIT_PATH="$(CURDIR)/outputs/audit/audit.jsonl" \
		ansible-playbook playbooks/site.yml \
		-e @"$${KEYOPS_LAB_DIR:-.lab}/estate.yml" -e keyops_output_dir="$(CURDIR)/outputs" \
		-e keyops_audit_path="$(CURDIR)/outputs/audit/audit.jsonl" -e keyops_audit_spool_dir="$(CURDIR)/outputs/audit/spool"
	@echo "outputs: $(CURDIR)/outputs"

## test: set up and run every check CI runs
test: bootstrap-test lint sanity unit integration reliability-quick molecule bench-smoke

bootstrap:
	scripts/bootstrap.sh

bootstrap-test:
	scripts/bootstrap.sh --test

lab-up:
	$(LAB) up

lab-seed:
	$(LAB) seed

lab-status:
	$(LAB) status

lab-down:
	$(LAB) down

lint:
	ruff format --check .
	ruff check .
	ansible-lint --profile production --offline

sanity:
	scripts/sanity.sh

unit:
	$(PY) -m pytest tests/unit -q

# Two workers, a file each at a time: each worker runs its own lab (tests/integration/conftest.py).
integration:
	$(PY) -m pytest tests/integration -q -n 2 --dist loadfile

# The reliability suite's quick form in a process of its own (its lab and environment stay apart from the
# integration labs): a few SIGKILL trials per operation, the outages and everything else; see docs/reliability.md.
reliability-quick:
	$(PY) -m pytest tests/reliability -q

molecule:
	scripts/molecule.sh

build:
	.venv/bin/ansible-galaxy collection build --force --output-path .build/dist

bench: bootstrap
	$(PY) bench/run.py

## bench-smoke: every benchmark on small N with its correctness checks (CI; about two minutes)
bench-smoke:
	$(PY) -m pytest tests/bench -q

reliability: bootstrap-test
	$(PY) -m pytest tests/reliability -q --full
