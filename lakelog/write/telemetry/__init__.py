"""Telemetry: ``run.watch`` hooks on the optimizer, per-tensor summaries and fingerprints, the holdout."""
