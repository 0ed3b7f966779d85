"""The environment fingerprint stored in run.json: what must match for two runs to be comparable."""

from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any

import torch

_HASHSEED_AT_IMPORT = os.environ.get("PYTHONHASHSEED")


def hash_seed_at_start() -> str | None:
    """PYTHONHASHSEED as this interpreter started with it (what decides its str hashes and set order).

    ``seed_everything`` sets the variable for processes started later; this module reads it when first
    imported (lakelog imports it before any seeding runs), and ``sys.flags.hash_randomization`` is 0
    exactly when the interpreter started with PYTHONHASHSEED=0. A value set in-process after start is
    reported as ``"random (set after start)"``.
    """
    if not sys.flags.hash_randomization:
        return "0"
    if _HASHSEED_AT_IMPORT == "0":
        return "random (set after start)"
    return _HASHSEED_AT_IMPORT


ENV_VARS = (
    "CUBLAS_WORKSPACE_CONFIG",
    "PYTHONHASHSEED",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NCCL_ALGO",
    "TORCH_CUDNN_V8_API_ENABLED",
    "NVIDIA_TF32_OVERRIDE",
)


def rank_and_world_size() -> tuple[int, int]:
    """The process's rank from torch.distributed when it is initialised, else from the launcher's variables."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    # torchrun, then Slurm, Open MPI and PMI launchers
    for rank_var, size_var in (
        ("RANK", "WORLD_SIZE"),
        ("SLURM_PROCID", "SLURM_NTASKS"),
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
    ):
        if rank_var in os.environ and size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    return 0, 1


def environment(rank: int, world_size: int) -> dict[str, Any]:
    """Versions, determinism flags and variables; read-only, draws no random numbers."""
    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a torch dependency in practice
        numpy_version = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "torch": torch.__version__,
        "numpy": numpy_version,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cudnn": cudnn.version() if cudnn.is_available() else None,
        "cudnn_enabled": cudnn.enabled,
        "cudnn_deterministic": cudnn.deterministic,
        "cudnn_benchmark": cudnn.benchmark,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "num_threads": torch.get_num_threads(),
        "env": {name: os.environ.get(name) for name in ENV_VARS} | {"PYTHONHASHSEED": hash_seed_at_start()},
        "rank": rank,
        "world_size": world_size,
    }
