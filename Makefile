# The two set-up commands of the README: `make demo` and `make test` (both self-installing).
PY := .venv/bin/python
export NLTK_DATA ?= $(CURDIR)/.venv/nltk_data
export PYTHONWARNINGS ?= ignore::FutureWarning

.PHONY: install demo test test-fast bench clean
install:
	bash tools/install.sh

demo: install
	$(PY) tools/demo.py --out exp/demo

test: install
	$(PY) -m pytest -q -ra tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf exp outputs .pytest_cache
