"""One rank of the tiny DDP training used by tests/test_ddp.py (started once per rank, gloo backend).

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/ddp_worker.py ROOT

Trains three runs in one process group, each a linear model wrapped in DistributedDataParallel:
``correct`` (DistributedSampler), ``perturbed`` (rank 1 adds to one gradient after the all-reduce
at step PERTURB_STEP, the classic rank-dependent update), ``no_sampler`` (every rank loads the whole
dataset in the same order). Rank 0 prints one JSON line with the names it used.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import lakelog
from lakelog.write.distributed import shared_run_name

N, FEATURES, BATCH = 48, 4, 4
PERTURB_STEP = 3
PERTURBED_PARAM = "weight"


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(N, FEATURES, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x, y, torch.arange(N))


def train(root: str, scenario: str, name: str) -> None:
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Linear(FEATURES, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = _data()
    if scenario == "no_sampler":  # the bug: each rank shuffles the whole dataset with the same seed
        loader = DataLoader(data, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))
    else:
        loader = DataLoader(data, batch_size=BATCH, sampler=DistributedSampler(data, shuffle=True, seed=0))
    # No rank= or world_size=: lakelog reads them from the initialised process group.
    with lakelog.init(root, name=name, config={"scenario": scenario}, seed=0) as run:
        run.watch(model, optimizer, every=1)  # fingerprints of this rank's weights after every update
        for step, (x, y, ids) in enumerate(loader, start=1):
            run.log_batch(sample_ids=ids, inputs=x, step=step)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()  # DDP averages the gradients over ranks here
            if scenario == "perturbed" and rank == 1 and step == PERTURB_STEP:
                model.module.weight.grad[0, 0] += 0.5
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)
    dist.barrier()  # the test reads the lake once every rank has finished


def main() -> None:
    root = sys.argv[1]
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    names = {
        "correct": shared_run_name(),  # generated on rank 0, broadcast once
        "perturbed": "perturbed",
        "no_sampler": "no_sampler",
    }
    for scenario, name in names.items():
        train(root, scenario, name)
    if dist.get_rank() == 0:
        print(json.dumps(names), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
