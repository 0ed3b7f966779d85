"""Shared by the benchmarks: a ResNet-50 built from torch layers (no download) and timers.

25.6M parameters in 161 tensors, the shapes of torchvision's resnet50, so every benchmark measures
the same "about 100 MB a model" the seeds describe.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int, *, track_running_stats: bool = True) -> None:
        super().__init__()
        cout = width * 4

        def bn(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, track_running_stats=track_running_stats)

        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), bn(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), bn(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), bn(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


def resnet50(classes: int = 1000, *, track_running_stats: bool = True) -> nn.Module:
    """ResNet-50; ``track_running_stats=False`` leaves only the parameters in the state dict."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64, track_running_stats=track_running_stats),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            layers.append(
                Bottleneck(cin, width, stride if b == 0 else 1, track_running_stats=track_running_stats)
            )
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def timed(
    fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None
) -> tuple[float, float]:
    """Best and median seconds of ``fn`` over ``repeats`` runs, after one warm-up run; ``sync`` waits
    for the device so queued kernels are counted."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def interleaved(
    ways: dict[str, Callable[[], object]],
    rounds: int,
    sync: Callable[[], None] = lambda: None,
    after: dict[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each of ``ways`` per round, the ways taking turns within every round (the order
    reversed every other round), so a machine that gets busier or quieter in between affects them
    alike. One untimed warm-up round first. ``after[name]`` runs untimed after that way each time
    (e.g. flushing the writer thread, so its work does not land in the next way's time)."""
    after = after or {}
    names = list(ways)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds + 1):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            ways[name]()
            sync()
            if r:
                times[name].append(time.perf_counter() - start)
            if name in after:
                after[name]()
    return times
