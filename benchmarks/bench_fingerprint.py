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

import torch
from resnet import resnet50, timed  # benchmarks/resnet.py, beside this script

from lakelog.write.fingerprint import fingerprint_many, to_hex


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
    params = [torch.randn(s, generator=gen).to(device) for s in (p.shape for p in resnet50().parameters())]
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

    ways = {
        "fingerprint_many + to_hex": fp_to_host,
        "torch.save to BytesIO": save,
        "sum of .norm().item()": norms,
    }
    results = {name: tuple(t * 1e3 for t in timed(fn, args.repeats, sync)) for name, fn in ways.items()}
    base = results["fingerprint_many + to_hex"][0]
    print(f"{'':28s} {'best ms':>9s} {'median ms':>10s} {'best / fingerprint':>19s}")
    for name, (best, median) in results.items():
        print(f"{name:28s} {best:9.1f} {median:10.1f} {best / base:18.2f}x")


if __name__ == "__main__":
    main()
