"""What one telemetry capture costs, next to one training step and next to the seed's way.

The model is ResNet-50 built from torch layers (25.6M parameters in 161 tensors, 53 BatchNorms),
trained with SGD + momentum on a small batch, so a step takes a realistic but short time on a CPU.
Measured side by side in one process (medians of ``--repeats``):

- train step: forward, backward and ``optimizer.step()`` without telemetry;
- lakelog capture, training-thread cost of ``watcher.capture()`` (what the optimizer hooks do on a
  captured step): all summaries from batched ops, fingerprints, the update norm, one host copy;
  the writer thread's share (Arrow rows, Parquet) is reported apart, as ``run.flush()`` after it;
- the seed's way: a per-parameter Python loop of ``grad.norm().item()`` and ``torch.save`` of the
  state dict; and the seed's full capture, which also ``torch.load``s the previous checkpoint for
  its weight delta (``(p - prev).norm().item()`` per parameter);
- the same content as a lakelog capture (statistics, update norm, fingerprints of weights, gradients
  and optimizer state) computed the per-parameter way, one reduction and one ``.item()`` at a time.

    python benchmarks/bench_telemetry.py [--device cpu|cuda] [--batch 2] [--size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from resnet import resnet50, timed  # benchmarks/resnet.py, beside this script
from torch import nn

import lakelog
from lakelog.write.fingerprint import fingerprint_hex


def median(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    return timed(fn, repeats, sync)[1]


def seed_loop(model: nn.Module, path: Path) -> None:
    """The seed's capture as the brief describes it: per-parameter norm().item() and torch.save."""
    for p in model.parameters():
        if p.grad is not None:
            p.grad.norm().item()
    torch.save(model.state_dict(), path)


def seed_full(model: nn.Module, path: Path) -> None:
    """The seed's TrainingTelemetry: gradient norms, weight delta against the checkpoint on disk, save."""
    total = 0.0
    for p in model.parameters():
        if p.grad is not None:
            total += p.grad.norm().item() ** 2
    if path.exists():
        previous = torch.load(path, map_location=next(model.parameters()).device)
        for name, p in model.named_parameters():
            (p.detach() - previous[name]).norm().item()
    torch.save(model.state_dict(), path)


def naive_same_content(model: nn.Module, opt: torch.optim.Optimizer, kept: dict[str, torch.Tensor]) -> None:
    """What a capture records, computed the per-parameter way: one reduction and one .item() at a time."""
    for name, p in model.named_parameters():
        t = p.detach()
        for value in (
            t.norm(),
            t.mean(),
            t.std(),
            t.min(),
            t.max(),
            t.abs().max(),
            torch.isnan(t).sum(),
            torch.isinf(t).sum(),
            p.grad.norm(),
            p.grad.abs().max(),
        ):
            value.item()
        fingerprint_hex(t)
        fingerprint_hex(p.grad)
        if name in kept:
            (t - kept[name]).norm().item()
            kept[name].copy_(t)
        else:
            kept[name] = t.to("cpu", copy=True)
        for value in opt.state[p].values():
            if isinstance(value, torch.Tensor):
                value.norm().item()
                fingerprint_hex(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = resnet50().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    n_params = sum(p.numel() for p in model.parameters())
    n_tensors = len(list(model.parameters()))
    print(
        f"ResNet-50 from torch layers: {n_params / 1e6:.1f}M parameters in {n_tensors} tensors, "
        f"{len(list(model.buffers()))} buffers; SGD momentum; batch {args.batch}x3x{args.size}x{args.size} "
        f"on {device} ({torch.get_num_threads()} threads)"
    )

    def train_step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step_s = median(train_step, args.repeats, sync)  # also leaves gradients and momentum buffers in place
    results: list[tuple[str, float, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "last_checkpoint.pt"
        seed_s = median(lambda: seed_loop(model, ckpt), args.repeats, sync)
        seed_full_s = median(lambda: seed_full(model, ckpt), args.repeats, sync)
        kept: dict[str, torch.Tensor] = {}
        naive_s = median(lambda: naive_same_content(model, opt, kept), args.repeats, sync)
        variants = [
            ("lakelog capture (default: fingerprints, keep_previous='cpu')", {}),
            ("lakelog capture, fingerprints=False", {"fingerprints": False}),
            (
                "lakelog capture, fingerprints=False, keep_previous=None",
                {"fingerprints": False, "keep_previous": None},
            ),
            ("lakelog capture, keep_previous='disk'", {"keep_previous": "disk"}),
        ]
        for i, (label, options) in enumerate(variants):
            run = lakelog.init(tmp, name=f"bench{i}")
            watcher = run.watch(model, opt, every=10**9, initial=False, **options)
            run.flush()
            watcher.capture(step=0)  # the first capture allocates the kept copy; later ones reuse it
            run.flush()
            captures, writes = [], []
            for step in range(1, args.repeats + 1):
                start = time.perf_counter()
                watcher.capture(step=step)
                sync()
                captures.append(time.perf_counter() - start)
                start = time.perf_counter()
                run.flush()  # the writer thread's share: Arrow rows and Parquet, off the training loop
                writes.append(time.perf_counter() - start)
            run.finish()
            results.append((label, statistics.median(captures), statistics.median(writes)))
    print(f"\n{'':64s} {'ms':>9s} {'x step':>8s} {'vs seed loop':>13s}")
    print(f"{'train step (forward + backward + SGD step)':64s} {step_s * 1e3:9.1f} {1:8.2f}")
    print(
        f"{'seed: per-parameter norm().item() loop + torch.save':64s} {seed_s * 1e3:9.1f} {seed_s / step_s:8.2f} {1:13.2f}"
    )
    print(
        f"{'seed: full (+ torch.load and per-parameter weight delta)':64s} {seed_full_s * 1e3:9.1f} "
        f"{seed_full_s / step_s:8.2f} {seed_s / seed_full_s:12.2f}x"
    )
    print(
        f"{'same content as a capture, per-parameter .item() loop':64s} {naive_s * 1e3:9.1f} "
        f"{naive_s / step_s:8.2f} {seed_s / naive_s:12.2f}x"
    )
    for label, capture_s, writer_s in results:
        print(f"{label:64s} {capture_s * 1e3:9.1f} {capture_s / step_s:8.2f} {seed_s / capture_s:12.2f}x")
        print(f"{'  + writer thread (rows, Parquet), off the training loop':64s} {writer_s * 1e3:9.1f}")
    print("\n'vs seed loop' > 1: that many times cheaper than the seed's per-parameter loop.")
    print(
        f"default capture vs the same content computed per parameter: {naive_s / results[0][1]:.2f}x cheaper"
    )


if __name__ == "__main__":
    main()
