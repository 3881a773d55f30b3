# autotune: `make demo` runs the whole loop on a bundled example; `make test` runs the tests.
PYTHON ?= python3
PYTEST_ARGS ?= -q

.PHONY: test demo bench latency decisions plugin-check report-check check clean

test:
	$(PYTHON) tests/bootstrap.py $(PYTEST_ARGS) tests

demo:
	$(PYTHON) examples/demo.py

bench: latency decisions

latency:
	$(PYTHON) bench/latency.py

decisions:
	$(PYTHON) bench/decisions.py

plugin-check:
	$(PYTHON) tests/support/ensure_claude.py
	AUTOTUNE_REQUIRE_CLAUDE=1 $(PYTHON) tests/bootstrap.py $(PYTEST_ARGS) tests/plugin -p no:cacheprovider

report-check:
	$(PYTHON) tests/support/report_check_demo.py

clean:
	rm -rf .pytest_cache tests/__pycache__ tests/*/__pycache__ bench/__pycache__
