"""What one telemetry capture costs next to one training step, measured side by side in one run.

The model is ResNet-50 built from torch layers (25.6M parameters in 161 tensors, 53 BatchNorms),
trained with SGD + momentum on a small batch, so a step takes a realistic but short time on a CPU.
Every way below runs once per round, the ways taking turns (``--rounds`` rounds, medians):

- train step: forward, backward and ``optimizer.step()`` without telemetry;
- full capture: what the optimizer hooks do at a captured step (``watcher.capture()``): summaries of
  weights, buffers, gradients and optimizer state, their fingerprints, the update norm against the
  kept previous weights, one host copy; the writer thread's share (Arrow rows, Parquet) runs after
  the timer stops (``run.flush()``) and is reported apart;
- the same without fingerprints, and without fingerprints and update norms;
- floors on the same bytes (weights, gradients and momentum): one ``sum`` over a flat copy, the
  fingerprints alone (``fingerprint_many``), one ``_foreach_norm``;
- the seed's way: a per-parameter ``grad.norm().item()`` loop and ``torch.save`` of the state dict.

Targets: full capture <= 25% of a train step (ambition 10%) on the CPU; <= 1% on a GPU.

    python benchmarks/bench_telemetry.py [--device cpu|cuda] [--batch 4] [--size 128] [--threads 2]
        [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from resnet import interleaved, resnet50  # benchmarks/resnet.py, beside this script
from torch import nn

import lakelog
from lakelog.write.fingerprint import fingerprint_many


def seed_loop(model: nn.Module, path: Path) -> None:
    """The seed's capture: per-parameter norm().item() and torch.save."""
    for p in model.parameters():
        if p.grad is not None:
            p.grad.norm().item()
    torch.save(model.state_dict(), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = resnet50().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)

    def train_step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    train_step()  # gradients and momentum buffers in place
    params = list(model.parameters())
    tensors = [p.detach() for p in params] + [p.grad for p in params]
    tensors += [opt.state[p]["momentum_buffer"] for p in params]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors])
    print(
        f"ResNet-50 from torch layers: {sum(p.numel() for p in params) / 1e6:.1f}M parameters in "
        f"{len(params)} tensors; SGD momentum; batch {args.batch}x3x{args.size}x{args.size} on {device} "
        f"({torch.get_num_threads()} threads); weights + gradients + momentum = {nbytes / 2**20:.0f} MiB; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    variants = {
        "full capture (fingerprints, update norm)": {},
        "capture without fingerprints": {"fingerprints": False},
        "capture without fingerprints or update norm": {"fingerprints": False, "keep_previous": None},
    }
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "last_checkpoint.pt"
        runs, ways, after = [], {}, {}
        ways["train step"] = train_step
        for i, (label, options) in enumerate(variants.items()):
            run = lakelog.init(tmp, name=f"bench{i}")
            # step=... never a multiple of every: the hooks stay idle, captures are called explicitly
            watcher = run.watch(model, opt, every=10**9, step=lambda: 1, initial=False, **options)
            watcher.capture(step=0)  # the first capture allocates the kept copy; later ones reuse it
            run.flush()
            runs.append(run)
            ways[label] = _capture(watcher)
            after[label] = run.flush
        ways["floor: one sum over a flat copy of the same bytes"] = lambda: flat.sum()
        ways["floor: fingerprints alone (fingerprint_many)"] = lambda: fingerprint_many(tensors)
        ways["floor: one _foreach_norm"] = lambda: torch._foreach_norm(tensors)
        ways["seed: per-parameter norm().item() + torch.save"] = lambda: seed_loop(model, ckpt)
        times = interleaved(ways, args.rounds, sync, after)
        writer = {label: _timed_flushes(runs[i], ways[label], sync) for i, label in enumerate(variants)}
        for run in runs:
            run.finish()
    step = statistics.median(times["train step"])
    print(f"\n{'':56s} {'median ms':>10s} {'x step':>8s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:56s} {med * 1e3:10.1f} {med / step:8.3f}")
        if name in writer:
            print(
                f"{'  + writer thread (rows, Parquet), off the training loop':56s} {writer[name] * 1e3:10.1f}"
            )
    fp = statistics.median(times["floor: fingerprints alone (fingerprint_many)"])
    one = statistics.median(times["floor: one sum over a flat copy of the same bytes"])
    print(
        f"\nfingerprints: {nbytes / fp / 1e9:.1f} GB/s, {fp / one:.2f}x a one-pass sum ({nbytes / one / 1e9:.1f} GB/s)"
    )
    full = statistics.median(times["full capture (fingerprints, update norm)"])
    print(f"full capture / train step = {full / step:.3f} (target <= 0.25, ambition <= 0.10)")
    print(f"load average after: {os.getloadavg()[0]:.2f} (2 cores shared; rerun when it is low)")


def _capture(watcher: Any) -> Callable[[], None]:
    counter = iter(range(1, 10**9))
    return lambda: watcher.capture(step=next(counter))


def _timed_flushes(run: Any, capture: Callable[[], None], sync: Callable[[], None]) -> float:
    """Median seconds the writer thread takes for one capture's rows (flush after each of 3 captures)."""
    out = []
    for _ in range(3):
        capture()
        sync()
        start = time.perf_counter()
        run.flush()
        out.append(time.perf_counter() - start)
    return statistics.median(out)


if __name__ == "__main__":
    main()
