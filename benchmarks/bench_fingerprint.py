"""How long fingerprinting a ResNet-50-sized parameter set takes, next to the alternatives.

Why: `run.watch` fingerprints every parameter at each capture, on CPU runs too, so its cost has to be
small next to a training step. The yardsticks are what users do today: `torch.save` of the weights
(a copy of every byte) and one `.norm().item()` per tensor (one small kernel and one sync each).

    python benchmarks/bench_fingerprint.py [--device cuda] [--repeats 15] [--threads N]

Prints the best and the median of the repeats in milliseconds, and each yardstick's ratio to the
fingerprint. Shared or busy machines make medians noisy; the best time is the cost of the work.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import torch

from lakelog.fingerprint import fingerprint_many, to_hex


def resnet50_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of torchvision's resnet50 (161 tensors, 25.56M elements), without torchvision."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for block in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]
            shapes += [(planes, planes, 3, 3), (planes,), (planes,)]
            shapes += [(planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if block == 0:  # the downsample branch
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    shapes += [(1000, 2048), (1000,)]
    return shapes


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> tuple[float, float]:
    """Best and median wall time of `fn` in ms, after one warm-up call; `sync` waits for the device."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(device) for s in resnet50_shapes()]
    numel = sum(p.numel() for p in params)
    print(
        f"{len(params)} tensors, {numel / 1e6:.2f}M float32 ({numel * 4 / 2**20:.0f} MiB) on {device}, "
        f"{torch.get_num_threads()} threads"
    )

    def fp_to_host() -> list[str] | str:
        return to_hex(fingerprint_many(params))  # the one transfer a capture would do

    def save() -> int:
        buf = io.BytesIO()
        torch.save(params, buf)
        return buf.tell()

    def norms() -> float:
        return sum(p.norm().item() for p in params)

    results = {
        "fingerprint_many + to_hex": timed(fp_to_host, args.repeats, sync),
        "torch.save to BytesIO": timed(save, args.repeats, sync),
        "sum of .norm().item()": timed(norms, args.repeats, sync),
    }
    base = results["fingerprint_many + to_hex"][0]
    print(f"{'':28s} {'best ms':>9s} {'median ms':>10s} {'best / fingerprint':>19s}")
    for name, (best, median) in results.items():
        print(f"{name:28s} {best:9.1f} {median:10.1f} {best / base:18.2f}x")


if __name__ == "__main__":
    main()
