# Bootstrap and run lbtap on a fresh Debian machine.
#   make up    - install everything, then run the all-in-one `lbtap up` (SQLite, in-process
#                bus) managing the namespace $(NETNS) so the machine's own interfaces stay untouched
#   make test  - install everything, then run unit, functional and fullstack tests

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NETNS ?= lbtap-host
STATE ?= $(CURDIR)/state
PORT ?= 9696
DEB_PACKAGES := python3-venv iproute2 nftables iptables ipset conntrack dnsmasq-base iputils-ping arping \
	iperf3 isc-dhcp-client tcpdump procps

.PHONY: bootstrap deb venv up test test-unit test-functional test-fullstack bench clean

bootstrap: deb venv

deb:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

up: bootstrap
	$(BIN)/lbtap up --netns $(NETNS) --state-dir $(STATE) --port $(PORT)

test: bootstrap
	$(BIN)/python -m pytest -p no:cacheprovider -q -rs tests

test-unit: bootstrap
	$(BIN)/python -m pytest -q -m unit tests/unit

test-functional: bootstrap
	$(BIN)/python -m pytest -q -rs tests/functional

test-fullstack: bootstrap
	$(BIN)/python -m pytest -q -rs tests/fullstack

bench: bootstrap
	$(BIN)/pip install -q -e '.[test,bench]'
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) state .pytest_cache
