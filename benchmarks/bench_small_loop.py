"""The whole training loop of a digits-sized CNN with everything logged, next to the same loop without lakelog.

Small models are where most debugging happens, and there a capture's fixed cost (Python work per
tensor, many tiny kernels, the writer thread's rows) matters as much as bandwidth. The model is a
CNN of ~30k parameters on 8x8 single-channel images (sklearn's digits in size; synthetic data, no
download), batch 64, SGD with momentum. Variants, measured interleaved (one block of steps of each
per round, ``--rounds`` rounds, medians per step):

- plain: the loop without lakelog;
- logged: ``log_batch`` (sample ids and the input fingerprint), ``log_predictions`` (logits, labels,
  loss per sample), ``log`` of the loss;
- logged + ``watch(every=1)`` (and ``every=10``): telemetry of every weight, gradient, buffer and
  optimizer state, fingerprints included, at every (tenth) step;
- the floor of a capture at every step, without lakelog: an optimizer post-hook that copies every
  weight, gradient and optimizer state into buffers made once, with one ``torch._foreach_copy_``.
  Any capture of them must read them once per step before the next step changes them in place,
  so ``watch(every=1)`` cannot cost less than this on top of "logged" (here it is within the
  machine's noise of the plain loop: what a capture costs is lakelog's own work).

Each logged variant's time includes ``run.finish()``, so the writer thread's backlog is counted.
Target: logged + watch(every=1) <= 1.10x plain. Besides wall time per step, the CPU time of the whole
process per step (all threads: training, intra-op, writer) is printed: on a machine shared with other
work it moves much less than wall time, and it is what logging takes from the cores.

    python benchmarks/bench_small_loop.py [--steps 200] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import lakelog

BATCH, CLASSES = 64, 10


def digits_cnn() -> nn.Module:
    """~30k parameters: two 3x3 convolutions (one with BatchNorm), a pooled 512-wide feature, two linears."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 48),
        nn.ReLU(),
        nn.Linear(48, CLASSES),
    )


def make_data(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(steps, BATCH, 1, 8, 8, generator=g), torch.randint(
        0, CLASSES, (steps, BATCH), generator=g
    )


def copy_floor(opt: torch.optim.Optimizer) -> None:
    """The least a capture at every step does: one copy of the weights, gradients and optimizer state
    into buffers made at the first step (a post-hook, as ``watch`` uses)."""
    copies: list[torch.Tensor] = []

    def post(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        tensors = params + [p.grad for p in params if p.grad is not None]
        tensors += [v for p in params for v in optimizer.state[p].values() if isinstance(v, torch.Tensor)]
        if len(copies) != len(tensors):
            copies[:] = [torch.empty_like(t) for t in tensors]
        torch._foreach_copy_(copies, tensors)

    opt.register_step_post_hook(post)


def run_variant(
    kind: str, steps: int, data: tuple[torch.Tensor, torch.Tensor], root: Path, tag: str
) -> tuple[float, float]:
    """Wall and process CPU seconds for `steps` steps of the loop (plus ``run.finish()`` when something
    is logged)."""
    torch.manual_seed(0)
    model = digits_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = data
    run = lakelog.init(root, name=f"{kind}-{tag}") if kind not in ("plain", "floor") else None
    if kind == "floor":
        copy_floor(opt)
    if run is not None and kind.startswith("watch"):
        run.watch(model, opt, every=int(kind.removeprefix("watch")))
    ids = torch.arange(BATCH)
    gc.collect()  # a full collection owed by earlier blocks (~0.2 s with torch imported) is not this block's
    start, cpu = time.perf_counter(), time.process_time()
    for s in range(steps):
        if run is not None:
            run.log_batch(step=s, sample_ids=ids + s * BATCH, inputs=x[s])
        logits = model(x[s])
        loss = nn.functional.cross_entropy(logits, y[s], reduction="none")
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
        if run is not None:
            run.log_predictions(logits.detach(), labels=y[s], loss=loss.detach(), step=s)
            run.log({"loss": loss.mean().detach()}, step=s)
    if run is not None:
        run.finish()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = make_data(args.steps)
    n_params = sum(p.numel() for p in digits_cnn().parameters())
    print(
        f"digits-sized CNN: {n_params} parameters, batch {BATCH}x1x8x8, SGD momentum, {args.steps} steps x "
        f"{args.rounds} rounds, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}"
    )
    kinds = ["plain", "floor", "logged", "watch1", "watch10"]
    labels = {
        "plain": "no lakelog",
        "floor": "floor: one copy of what a capture reads",
        "logged": "predictions + scalars + batches",
        "watch1": "  + watch(every=1), fingerprints on",
        "watch10": "  + watch(every=10), fingerprints on",
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:  # warm-up: imports, allocator, first Parquet writes
            run_variant(kind, min(20, args.steps), data, Path(tmp), "warm")
        for r in range(args.rounds):
            order: list[str] = kinds if r % 2 == 0 else kinds[::-1]
            for kind in order:
                wall, cpu = run_variant(kind, args.steps, data, Path(tmp), str(r))
                times[kind].append(wall / args.steps)
                cpus[kind].append(cpu / args.steps)
    base, cpu_base = statistics.median(times["plain"]), statistics.median(cpus["plain"])
    print(f"\n{'':40s} {'ms/step':>9s} {'x plain':>8s} {'CPU ms/step':>12s} {'x plain':>8s}")
    for kind in kinds:
        med, cpu = statistics.median(times[kind]), statistics.median(cpus[kind])
        print(
            f"{labels[kind]:40s} {med * 1e3:9.3f} {med / base:8.2f} {cpu * 1e3:12.3f} {cpu / cpu_base:8.2f}"
        )
    print(f"\nload average after: {os.getloadavg()[0]:.2f} (2 cores shared; rerun when it is low)")


if __name__ == "__main__":
    main()
