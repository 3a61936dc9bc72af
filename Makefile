# condafleet.proxy -- every entry point of the project.
# `make demo` runs the main job on an embedded default; `make test` runs every test.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements/dev.txt requirements/constraints.txt | cksum | cut -d' ' -f1)

# Debian packages the tests use as real servers and consumers (shellcheck: ansible-test's shellcheck test;
# python3-requests: the lab host h1 shares this machine's filesystem and its verify runs requests there;
# chromium: the fleet report opened in a real headless browser; krb5-*, cntlm, libkrb5-dev: the Kerberos/NTLM lab;
# systemd-container: systemd-nspawn boots a host with a real systemd for the local proxy's service).
LAB_DEBS := tinyproxy squid zsh fish curl netcat-openbsd openssh-server debootstrap iproute2 openssl shellcheck python3-requests \
	chromium krb5-kdc krb5-admin-server krb5-user cntlm libkrb5-dev systemd-container
# pytest workers (pytest-xdist); PYTEST_WORKERS=0 runs serially. --dist loadgroup: the tests of one
# xdist_group (a lab, a systemd host: one module fixture) run in one worker, which starts it once.
PYTEST_WORKERS ?= 2
PYTEST_ARGS    ?=
JUNIT          := tests/output/junit/pytest.xml

# What the tests put outside the checkout (see scripts/clean-machine.sh and `make clean-machine`).
LAB_CACHE       ?= /var/cache/condafleet-lab
LAB_RUN         ?= /var/tmp/condafleet-lab
TEST_TMP        ?= /var/tmp
INSTALLER_CACHE ?= /var/cache/condafleet-installers
ANSIBLE_DIR     ?= $(HOME)/.ansible
USER_CACHE      ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)

.PHONY: venv lab-deps lab-cache collections demo docs test pytest unit sanity lint changelog-lint clean clean-machine

venv: $(STAMP)

# About a minute the first time (ansible, ansible-core, molecule, ansible-lint, antsibull-docs, pytest... from PyPI):
# scripts/pip_install.py prints a line per phase of pip's and one every 10 s.
$(STAMP): requirements/dev.txt requirements/constraints.txt
	@echo "venv: creating $(VENV) with $(PYTHON) and installing requirements/dev.txt (pinned by requirements/constraints.txt)"
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/python scripts/pip_install.py $(BIN)/pip -r requirements/dev.txt -c requirements/constraints.txt
	rm -f $(VENV)/.installed-* && touch $@

# As root: apt-get update + install only when something is missing. Otherwise: say what is missing, go on.
lab-deps:
	@scripts/lab-deps.sh $(LAB_DEBS)

# collections/ansible_collections/condafleet/proxy -> this checkout, the same tree pytest-ansible makes,
# refreshed so entries added after its first creation are visible too.
collections:
	@scripts/link-collection.sh

# Every test: unit + integration (pytest), ansible-test sanity, ansible-lint, changelog fragments.
# -k: run all of them even when one fails; make still exits non-zero.
test: lab-deps venv lab-cache
	@$(MAKE) --no-print-directory -k pytest sanity lint changelog-lint

# As root: the lab's Debian roots (debootstrap, about a minute each, once) and real conda, built before pytest
# so that their progress shows (inside pytest it is captured); later runs find them cached in $(LAB_CACHE).
lab-cache: venv
	@CONDAFLEET_LAB_CACHE=$(LAB_CACHE) $(BIN)/python scripts/lab_cache.py

pytest: venv collections
	@mkdir -p $(dir $(JUNIT))
	$(BIN)/pytest $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadgroup) --junitxml=$(JUNIT) $(PYTEST_ARGS)
	@$(BIN)/python scripts/check_pytest_ran.py $(JUNIT)

unit: venv collections
	$(BIN)/pytest -q tests/unit

# ansible-test sanity on a physical copy of the collection (see scripts/sanity.sh); pslint is skipped.
sanity: venv
	VENV=$(abspath $(VENV)) scripts/sanity.sh

# ansible-lint wants its own bin directory on PATH (it warns otherwise and runs ansible-playbook from there).
# With `offline: true` it does not install this collection for its syntax checks: it finds condafleet.proxy
# through the same collections/ tree as the tests (.ansible-lint keeps that tree itself out of the lint).
lint: venv collections
	PATH="$(abspath $(BIN)):$$PATH" ANSIBLE_COLLECTIONS_PATH="$(abspath collections)" \
		$(BIN)/ansible-lint --profile production --nocolor

changelog-lint: venv
	$(BIN)/antsibull-changelog lint

# The main job: no root, no existing proxy; see demo/run_demo.py.
demo: venv
	$(BIN)/python demo/run_demo.py

# HTML docs site (antsibull-docs + Sphinx, warnings fatal): docs/build/site/build/html/index.html.
docs: venv
	VENV=$(abspath $(VENV)) scripts/build-docs.sh

clean:
	rm -rf $(VENV) collections tests/output docs/build .ansible

# Everything the tests, the demo and the sanity run put outside the checkout (the lab's cache, ansible-test's
# venvs and pip stand-in, molecule's directories...; the list and sizes: README.md). DRY_RUN=1 only lists.
clean-machine:
	@LAB_CACHE=$(LAB_CACHE) LAB_RUN=$(LAB_RUN) TEST_TMP=$(TEST_TMP) INSTALLER_CACHE=$(INSTALLER_CACHE) \
		ANSIBLE_DIR=$(ANSIBLE_DIR) USER_CACHE=$(USER_CACHE) DRY_RUN=$(DRY_RUN) scripts/clean-machine.sh

# Only antsibull-docs lint-collection-docs (plugin/role docs and every reference in docs/docsite), about 5 s.
.PHONY: docs-lint
docs-lint: venv
	VENV=$(abspath $(VENV)) scripts/build-docs.sh --lint-only

# Fleet-scale benchmark (a script, not a test): the role against the module alone, a hand-written ansible.builtin
# playbook and the ping floor for N = 10, 50, 200 local hosts, the one-host ansible-pull case and the SSH lab when
# run as root, each phase with the linear and the mitogen_linear strategy; see docs/performance.md. E.g.
#   make bench BENCH_ARGS="--sizes 10,200,50 --runs 3 --json /tmp/bench.json"
#   make bench BENCH_ARGS="--sizes 3 --runs 1 --lab-runs 1 --pull-runs 1"   (a quick check of the tooling)
#   make bench BENCH_ARGS="--strategies mitogen_linear"                      (one strategy only)
.PHONY: bench
bench: venv collections
	$(BIN)/python bench/fleet_bench.py --lab $(BENCH_ARGS)
