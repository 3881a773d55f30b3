# autotune: `make demo` runs the whole loop on a bundled example; `make test` runs the tests
# (`make test-fast`: all but the ones marked slow, in well under a minute).
PYTHON ?= python3
PYTEST_ARGS ?= -q
# the tests run in this many pytest processes at once (auto: one per core, at most 4)
JOBS ?= auto

.PHONY: test test-fast demo bench latency decisions bigoutput manynames plugin-check report-check clean

# Everything but the real-Claude-CLI checks (those are `make plugin-check`).
test:
	$(PYTHON) tests/bootstrap.py --jobs $(JOBS) $(PYTEST_ARGS) -p no:cacheprovider --ignore=tests/plugin tests

# The pure core and the quick CLI tests: everything but @pytest.mark.slow (see README, Development).
test-fast:
	$(PYTHON) tests/bootstrap.py --jobs $(JOBS) $(PYTEST_ARGS) -p no:cacheprovider --ignore=tests/plugin -m "not slow" tests

demo:
	$(PYTHON) examples/demo.py

bench: latency decisions bigoutput manynames

latency:
	$(PYTHON) bench/latency.py

decisions:
	$(PYTHON) bench/decisions.py

bigoutput:
	$(PYTHON) bench/bigoutput.py

manynames:
	$(PYTHON) bench/manynames.py

# Installs the pinned @anthropic-ai/claude-code into .tools/claude when missing, validates the
# plugin with it and drives real `claude -p` sessions against a stand-in API on loopback.
plugin-check:
	$(PYTHON) tests/support/ensure_claude.py
	AUTOTUNE_REQUIRE_CLAUDE=1 $(PYTHON) tests/bootstrap.py $(PYTEST_ARGS) -p no:cacheprovider tests/plugin

# Renders the demo's HTML report in headless Chromium: no console errors, one point per experiment.
report-check:
	$(PYTHON) tests/support/report_check_demo.py

# Also removes .tools/ (pytest, and the 470 MB Claude Code CLI of plugin-check): do it before
# adding a checkout as a plugin marketplace, which copies the whole directory.
clean:
	rm -rf .tools .pytest_cache __pycache__ tests/__pycache__ tests/*/__pycache__ bench/__pycache__ examples/__pycache__
