#!/usr/bin/env bash
# Teacher vs distilled streaming students: WER x latency x size x speed, KD vs from scratch, synthetic + FSDD.
# Usage: bench/run.sh [--quick | --smoke] [--out DIR] [--results DIR] [--redo STAGE] [--jobs N]
# Resumable: re-running skips finished stages and models; a killed run continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export NLTK_DATA=${NLTK_DATA:-$PWD/.venv/nltk_data}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::FutureWarning,ignore::UserWarning}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # shared or busy cores: idle OpenMP threads sleep instead of spinning (spinning made 2 threads 3x slower than 1)
export BENCH_COMMAND="bench/run.sh${*:+ $*}"
exec "$PY" -m bench.run_bench "$@"  # from the repo root: bench/ and tools/ are packages
