"""The embedded demo: a synthetic shop (careflow/demo/data.py) and ``careflow demo``
(careflow/demo/run.py)."""
