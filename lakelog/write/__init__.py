"""The training process's side: the run, its background writer, host copies, fingerprints, telemetry,
dumps and determinism. Needs torch; never imports the read side or the CLI.
"""
