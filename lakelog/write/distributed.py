"""Data-parallel (DDP) helpers: every rank writes its own ``rank=<r>`` partitions of one shared run.

Nothing here runs inside the training step: writing needs no lock and no collective, because part
file names are unique per process and each rank has its own partition folders. The only thing the
ranks must agree on is the run's name, which is settled once, before training, by
``shared_run_name`` (one broadcast when ``torch.distributed`` is initialised).
"""

from __future__ import annotations

import os
import re
from typing import Any

from lakelog.errors import InvalidArgumentError
from lakelog.lake.layout import check_run_name
from lakelog.write.env import rank_and_world_size as detect
from lakelog.write.run import Run

__all__ = ["is_distributed", "rank_and_world_size", "shared_run_name"]


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    dist = _dist()
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the world size (``torch.distributed`` first, then the launcher's variables)."""
    return detect()


def _launcher_run_id() -> str | None:
    """An id every rank of one launch shares without communicating (torchrun's rendezvous id)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id or run_id == "none":
        return None
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:64]


def shared_run_name(name: str | None = None) -> str:
    """The run name every rank must pass to ``lakelog.init``; call it on every rank, before training.

    A given ``name`` is returned as is. Otherwise rank 0 generates one and, when torch.distributed
    is initialised, broadcasts it (one collective, here, never in the training step); without an
    initialised process group, torchrun's ``TORCHELASTIC_RUN_ID`` names the run. A single process
    gets a fresh generated name.
    """
    if name is not None:
        return check_run_name(name)
    if is_distributed():
        dist = _dist()
        box = [Run._generated_name() if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return check_run_name(str(box[0]))
    run_id = _launcher_run_id()
    if run_id is not None:
        return check_run_name(f"torchrun-{run_id}")
    _, world_size = rank_and_world_size()
    if world_size > 1:
        raise InvalidArgumentError(
            "name: with WORLD_SIZE > 1 and no initialised process group, the ranks cannot agree on a "
            "generated run name: pass the same name on every rank, or call shared_run_name() after "
            "torch.distributed.init_process_group"
        )
    return Run._generated_name()
