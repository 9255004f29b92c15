"""The embedded demo: a synthetic shop (demo/data.py) and ``careflow demo`` (demo/run.py)."""
