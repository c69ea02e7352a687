"""The benchmark harness (issue 5): `make bench`, `make bench-smoke`, `python -m bench.harness`."""
