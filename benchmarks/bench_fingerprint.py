"""Fingerprint throughput on a ResNet-50-sized parameter set, next to a one-pass ``sum`` over the same bytes.

Why: ``run.watch`` fingerprints every parameter, gradient and optimizer state at each capture, so its
cost is judged against the cheapest possible read of the same bytes. Ways, taking turns in every round
(``--rounds`` rounds, medians):

- ``x3`` (the CPU default): ``xxh3_128`` of each tensor's bytes on a small thread pool;
- ``v1`` (the accelerator algorithm, also runnable on CPU): torch ops where the tensors live;
- floors: one ``sum`` over a flat copy of the same bytes, one ``sum`` per tensor, ``_foreach_norm``;
  on the CPU also one-thread ``xxh3_128`` over the flat copy;
- yardsticks: ``torch.save`` of the tensors to memory, a per-tensor ``.norm().item()`` loop.

Prints GB/s and each way's time as a multiple of the one-pass sum.

    python benchmarks/bench_fingerprint.py [--device cpu|cuda] [--rounds 9] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics

import torch
import xxhash
from resnet import interleaved, resnet50  # benchmarks/resnet.py, beside this script

from lakelog.write.fingerprint import fingerprint_many, to_hex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(device) for s in (p.shape for p in resnet50().parameters())]
    nbytes = sum(p.numel() * p.element_size() for p in params)
    flat = torch.cat([p.reshape(-1) for p in params])
    print(
        f"{len(params)} tensors, {nbytes / 2**20:.0f} MiB float32 on {device}, {torch.get_num_threads()} "
        f"threads; load average {os.getloadavg()[0]:.2f}"
    )

    def save() -> int:
        buf = io.BytesIO()
        torch.save(params, buf)
        return buf.tell()

    ways = {
        "floor: one sum over a flat copy": lambda: flat.sum(),
        "floor: one sum per tensor": lambda: [p.sum() for p in params],
        "floor: _foreach_norm": lambda: torch._foreach_norm(params),
    }
    if device.type == "cpu":
        ways["x3 fingerprint_many + to_hex (default)"] = lambda: to_hex(fingerprint_many(params))
        ways["floor: xxh3_128 of the flat copy, one thread"] = lambda: xxhash.xxh3_128_intdigest(
            memoryview(flat.numpy()).cast("B")
        )
    ways["v1 fingerprint_many + to_hex" + (" (default)" if device.type != "cpu" else "")] = lambda: to_hex(
        fingerprint_many(params, algorithm="v1"), "v1"
    )
    ways["torch.save to BytesIO"] = save
    ways["per-tensor .norm().item()"] = lambda: sum(p.norm().item() for p in params)
    times = interleaved(ways, args.rounds, sync)
    base = statistics.median(times["floor: one sum over a flat copy"])
    print(f"\n{'':46s} {'median ms':>10s} {'GB/s':>7s} {'x sum':>7s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:46s} {med * 1e3:10.2f} {nbytes / med / 1e9:7.1f} {med / base:7.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f} (2 cores shared; rerun when it is low)")


if __name__ == "__main__":
    main()
