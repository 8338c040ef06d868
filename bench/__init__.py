"""Benchmarks for cachetasks: the service side by side with the original daemon and the machine's limit.

Scripts, not tests: each `sN_*.py` sets up its own servers and data, runs the real worker and
beat processes, and prints a table with figures and ratios. `run_all.py` runs them all.
"""
