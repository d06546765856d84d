"""Benchmarks of distributed_sac, each run from the repository's root as
`python -m benchmarks.<name>` (e.g. `python -m benchmarks.throughput --quick`)."""
