"""Benchmarks of the mesh against a bare grpc.aio echo baseline measured in the same run.

`python -m bench` (full, ~10 minutes) or `python -m bench --smoke` (seconds); see bench/README.md.
"""
