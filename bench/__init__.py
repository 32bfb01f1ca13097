"""Teacher-vs-students benchmark (``bench/run.sh`` = ``python -m bench.run_bench`` from the repo root)."""
