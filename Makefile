# The two commands: `make demo` runs the whole system on its simulators, `make test` runs the
# tests. Both create .venv and install what they need, Debian packages included (as root;
# otherwise they print the apt-get line to run).

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# mosquitto: the test broker and the demo's ThingsBoard stand-in; xvfb, xauth and Mesa's
# software GL (libgl1-mesa-dri): the GUI in a real window on machines without a screen; gpsd: the
# gps_reader is also tested against the real daemon; faketime: the uplink's clock rules; xdotool: a
# test presses the display's buttons as a finger would.
DEBS_TEST := mosquitto mosquitto-clients xvfb xauth libgl1-mesa-dri libgl1 fonts-dejavu-core gpsd faketime xdotool tmux
DEBS_DEMO := mosquitto fonts-dejavu-core

.PHONY: demo test check bench soak screenshots venv debs-test debs-demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

debs-test:
	scripts/ensure-debs $(DEBS_TEST)

debs-demo:
	scripts/ensure-debs $(DEBS_DEMO)

# pytest exits with 5 when it collected no tests; that means the suite is broken, so say so.
test: $(STAMP) debs-test
	@$(VPY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit status 5)" >&2; fi; \
	exit $$rc

# The edit-test loop: the pure tests (no processes, brokers or displays), in seconds.
check: $(STAMP)
	$(VPY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP) debs-demo
	scripts/demo

bench: $(STAMP) debs-test
	$(VPY) -m bench

# At least 10 minutes of the whole system with faults injected at random (not part of make test).
soak: $(STAMP) debs-test
	$(VPY) scripts/soak.py --minutes $${SOAK_MINUTES:-10}

# The driver and detail pages at 800x480, for the README (docs/screenshots/*.png).
screenshots: $(STAMP) debs-test
	$(VPY) scripts/screenshots.py

clean:
	rm -rf $(VENV) var .pytest_cache
