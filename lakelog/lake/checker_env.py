"""The environment contract between ``lakelog check-determinism`` and the script it runs.

The checker starts the user's script twice with these variables set; ``lakelog.init`` and
``lakelog.should_stop`` in that script read them. Both sides import the names from here so they
cannot drift apart.
"""

from __future__ import annotations

ROOT = "LAKELOG_ROOT"  # the lake root the script's init writes to
RUN_NAME = "LAKELOG_RUN_NAME"  # the run name it writes (determinism-a, determinism-b)
MODE = "LAKELOG_MODE"  # the init mode (overwrite)
MAX_STEPS = "LAKELOG_MAX_STEPS"  # how many steps should_stop lets the script train

# Variables that change what a process computes; seed_everything records them in run.json.
DETERMINISM_ENV = ("CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")
