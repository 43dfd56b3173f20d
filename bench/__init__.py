"""Benchmarks of janus_utils beside the loggers and SQLite recipes users compare it with.

``python -m bench`` prints the environment, runs every suite in one
pytest-benchmark run and prints a table of ratios; see bench/README.md.
"""
