"""The determinism report: which check first differs between two runs, with its cause and fix."""
