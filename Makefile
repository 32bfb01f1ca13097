# The two set-up commands of the README: `make demo` and `make test` (both self-installing).
PY := .venv/bin/python
export NLTK_DATA ?= $(CURDIR)/.venv/nltk_data
export PYTHONWARNINGS ?= ignore::FutureWarning

RECIPE := egs2/kd_synth/asr1

.PHONY: install demo test test-fast bench bench-quick bench-methods bench-rnnt clean
install:
	bash tools/install.sh

# ESPnet recipe: synthetic corpus + FSDD -> the zoo's HuBERT CTC teacher -> KD and scratch streaming students -> exp/RESULTS.md
demo: install
	cd $(RECIPE) && PATH=$(CURDIR)/.venv/bin:$$PATH ./run.sh --python python
	@cat $(RECIPE)/exp/RESULTS.md

# Two pytest workers (one per core), one thread each; slow tests are collected first (tests/conftest.py) and an idle
# worker steals queued tests, so the long end-to-end runs overlap everything else.
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -ra -n 2 --dist worksteal

test: install
	$(PYTEST) tests

test-fast: install
	$(PYTEST) -m "not slow" tests

# Teacher vs distilled streaming students (WER x latency x size x speed): bench/results/summary.md + PNGs.
# Resumable by stage (re-running skips finished stages/models); <= 150 min on 2 CPU cores, bench-quick ~10 min.
# bench-methods: aux+APC, LF-MMI, two-stage, HuBERT-disc, front-end KD, SEW and the shape presets
# (bench/results/methods/summary.md);
# bench-rnnt: transducer students, soft vs hard targets (bench/results/rnnt/summary.md).
bench: install
	bash bench/run.sh

bench-quick: install
	bash bench/run.sh --quick

bench-methods: install
	bash bench/run.sh --suite methods

bench-rnnt: install
	bash bench/run.sh --suite rnnt

clean:
	rm -rf exp outputs .pytest_cache
