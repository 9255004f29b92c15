"""Channel tests: the shared contract, per-provider tables, faults, Prism (see docs/channels.md)."""
