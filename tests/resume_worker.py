"""A training job as users write one, checkpointing and resuming; started as its own process by test_resume.py.

    python tests/resume_worker.py ROOT NAME --steps 16                       # uninterrupted
    python tests/resume_worker.py ROOT NAME --steps 16 --stop-after 10 --checkpoint CKPT
    python tests/resume_worker.py ROOT NAME --steps 16 --resume CKPT [--forget optimizer,loader,rng,scheduler]

A dropout MLP, SGD with momentum, a StepLR schedule and a shuffling DataLoader with its own seeded
generator; the loop logs the batch (with RNG states) and predictions before ``optimizer.step()`` and the
loss after it, and ``run.watch`` captures every step. The checkpoint holds what a resume must restore:
weights, optimizer state, scheduler state, the torch RNG state and the loader position (the generator
state at the start of the epoch and the number of batches consumed in it). ``--forget`` leaves parts
out on resume, as buggy resume code does: a fresh optimizer, a fresh scheduler, an unrestored RNG, or a
loader that restarts its epoch from a fresh generator.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import signal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lakelog

N, FEATURES, BATCH = 64, 6, 8
STEPS_PER_EPOCH = N // BATCH


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("name")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--stop-after", type=int)
    p.add_argument("--checkpoint")
    p.add_argument("--resume")
    p.add_argument("--forget", default="")
    p.add_argument(
        "--kill", action="store_true", help="SIGKILL itself right after the checkpoint (preemption)"
    )
    args = p.parse_args()
    forget = set(filter(None, args.forget.split(",")))
    torch.set_num_threads(1)

    random.seed(0)  # a careful job seeds every generator (nothing here draws from these two)
    np.random.seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    g = torch.Generator().manual_seed(7)
    data = torch.Generator().manual_seed(1234)
    x_all = torch.randn(N, FEATURES, generator=data)
    y_all = (x_all[:, 0] + 0.5 * x_all[:, 1] > 0).long()
    loader = DataLoader(
        TensorDataset(x_all, y_all, torch.arange(N)), batch_size=BATCH, shuffle=True, generator=g
    )

    step, skip = 0, 0
    if args.resume:
        ckpt = torch.load(args.resume, weights_only=False)
        model.load_state_dict(ckpt["model"])
        if "optimizer" not in forget:
            opt.load_state_dict(ckpt["optimizer"])
        if "scheduler" not in forget:
            sched.load_state_dict(ckpt["scheduler"])
        if "rng" not in forget:
            torch.set_rng_state(ckpt["torch_rng"])
        step = ckpt["step"]
        if "loader" not in forget:
            g.set_state(ckpt["epoch_generator"])
            skip = step % STEPS_PER_EPOCH
        # else: the loader restarts from a fresh generator and the epoch's first batch, at the restored step

    run = lakelog.init(args.root, name=args.name, seed=0, mode="resume" if args.resume else "error")
    run.watch(model, opt, every=1)
    with run:
        while step < args.steps:
            epoch = step // STEPS_PER_EPOCH
            epoch_generator = g.get_state()
            batches = itertools.islice(iter(loader), skip, None)
            skip = 0
            for x, y, ids in batches:
                if step >= args.steps:
                    break
                run.log_batch(step=step, epoch=epoch, sample_ids=ids.tolist(), inputs=x, rng=True)
                model.train()
                out = model(x)
                loss = F.cross_entropy(out, y)
                run.log_predictions(out.detach(), step=step, epoch=epoch, labels=y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                run.log({"loss": loss.detach()}, step=step, epoch=epoch)
                step += 1
                if args.stop_after is not None and step == args.stop_after:
                    torch.save(
                        {
                            "model": model.state_dict(),
                            "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(),
                            "torch_rng": torch.get_rng_state(),
                            "epoch_generator": epoch_generator,
                            "step": step,
                        },
                        args.checkpoint,
                    )
                    if args.kill:  # preempted: nothing after the last flush reaches the lake
                        os.kill(os.getpid(), signal.SIGKILL)
                    return  # the job ends here (time limit); `with run` records its last step


if __name__ == "__main__":
    main()
