"""Callbacks for the trainers users already have; each module imports its framework, this one does not.

What every integration does the same way lives here once: checking ``watch_every`` and opening the
run a callback owns from the user's ``lakelog.init`` keywords and what the trainer knows (its
config, seed, rank and world size). A new integration (``lakelog/integrations/<framework>.py``)
uses these and adds only its framework's hooks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lakelog.lake.checks import optional_positive_int
from lakelog.write import api
from lakelog.write.run import Run


def check_watch_every(value: Any) -> int | None:
    """The callbacks' shared ``watch_every`` check: a positive int, or None for the trainer's default."""
    return optional_positive_int(value, "watch_every")


def open_run(
    root: str | os.PathLike[str],
    name: str | None,
    init_options: Mapping[str, Any],
    *,
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> Run:
    """Open the run an integration owns: the user's ``init_options`` win over what the trainer knows.

    ``config`` (the trainer's arguments, the model's hyperparameters) is stored under the user's own
    ``config=`` keys; ``seed`` fills in when the user gave none (or None); ``rank``/``world_size``
    (the trainer's) when the user gave none, so every process writes its own partitions.
    """
    options = dict(init_options)
    user_config = options.pop("config", None)
    if config is not None or user_config is not None:
        options["config"] = {**(config or {}), **(user_config or {})}
    if options.get("seed") is None and seed is not None:
        options["seed"] = seed
    if rank is not None:
        options.setdefault("rank", rank)
    if world_size is not None:
        options.setdefault("world_size", world_size)
    return api.init(root, name=name, **options)


def finish_owned(run: Run | None, owns: bool, *, status: str = "finished") -> None:
    """Finish ``run`` if the integration opened it and it is still open; a run the user passed is theirs."""
    if run is not None and owns and not run.closed:
        run.finish(status=status)
