# Two entry points (see README): `make demo` and `make test`.  Both install what they need on a
# fresh Debian machine (as root): system packages, then a virtualenv with the project.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
APT_PACKAGES := python3 python3-venv fuse3 libfuse2 libfuse3-3 vmfs-tools vmfs6-tools qemu-utils e2fsprogs gcc make autoconf automake perl fio tgt istgt libiscsi7 libiscsi-dev ceph-mon ceph-osd ceph-common librbd1 iproute2
PYTEST_ARGS ?=

.PHONY: demo test deps system-deps venv lint clean man

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@test -e /dev/fuse || (mknod -m 666 /dev/fuse c 10 229 2>/dev/null || true)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

deps: system-deps venv

# Man pages from the tools' click definitions (installed with the package when present at install time).
man: venv
	$(VENV)/bin/python -m pyvmfs_tools.manpages man
	# the venv's install is editable, which installs no data files: put the pages where man(1)
	# looks for them beside $(VENV)/bin
	mkdir -p $(VENV)/share/man/man1 && cp man/*.1 $(VENV)/share/man/man1/

lint: venv
	$(VENV)/bin/ruff check vmfs hostsim tools tests bench

test: deps lint man
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

demo: deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ./scripts/demo.sh

clean:
	rm -rf $(VENV) demo man .pytest_cache .ruff_cache .hypothesis
