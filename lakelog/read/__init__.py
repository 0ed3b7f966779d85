"""The analysis side: DuckDB views over the lake, the query library, diff, doctor, plots, the report,
dump comparison and the determinism report. Never imports torch or the write side, so analysing runs
on a laptop (or ``lakelog sql`` in a shell) pays neither torch's import time nor its install.
"""
