"""The demo: train a small real model twice, log both runs, and let lakelog say where they part.

Run it with ``lakelog demo`` (or ``python -m lakelog.cli.demo``). It needs nothing downloaded: the data
set is generated in code (8x8 images of four stroke patterns with noise), and a run takes seconds
on a CPU. The second run carries a classic bug: from its third epoch on, the DataLoader's shuffle
is drawn from an unseeded generator, as happens when a resumed job forgets to restore it.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lakelog
from lakelog.cli.base import LakelogCommand
from lakelog.cli.screens import print_diff, print_doctor

CLASSES = ("horizontal", "vertical", "diagonal", "cross")


class StrokeImages(Dataset):
    """8x8 images of a stroke pattern plus noise; item i is (image, label, i) so batches carry sample ids."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, len(CLASSES), (n,), generator=gen)
        patterns = torch.zeros(len(CLASSES), 8, 8)
        patterns[0, 3:5, :] = 1
        patterns[1, :, 3:5] = 1
        patterns[2] = torch.eye(8)
        patterns[3] = torch.eye(8) + torch.eye(8).flip(1)
        shift = torch.randint(-2, 3, (n,), generator=gen)
        images = torch.stack(
            [patterns[c].roll(int(s), dims=int(c) % 2) for c, s in zip(self.labels, shift, strict=True)]
        )
        self.images = (images + 0.6 * torch.randn(n, 8, 8, generator=gen)).unsqueeze(1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.images[i], self.labels[i], i


def make_model() -> nn.Module:
    # features = the "backbone", classifier = the "head": the groups lakelog reports on.
    return nn.Sequential(
        nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ),
        nn.Sequential(nn.Dropout(0.2), nn.Linear(16, len(CLASSES))),
    )


def train(
    root: str | Path, name: str, *, epochs: int, buggy_from_epoch: int | None = None, mode: str = "overwrite"
) -> str:
    """One training run, logged; ``buggy_from_epoch`` switches the shuffle to an unseeded generator."""
    torch.manual_seed(0)
    data, holdout = StrokeImages(1536, seed=1), StrokeImages(64, seed=2)
    model = make_model()
    backbone, head = model[0], model[1]
    optimizer = torch.optim.SGD(
        [
            {"params": backbone.parameters(), "lr": 0.02, "name": "backbone"},
            {"params": head.parameters(), "lr": 0.2, "name": "head"},
        ],
        momentum=0.9,
    )
    holdout_batches = [(holdout.images, holdout.labels)]
    config = {
        "epochs": epochs,
        "batch_size": 64,
        "lr_backbone": 0.02,
        "lr_head": 0.2,
        "buggy_from_epoch": buggy_from_epoch,
    }
    step = 0
    with lakelog.init(root, name=name, config=config, seed=0, mode=mode) as run:
        run.watch(model, optimizer, every=4, groups={"backbone": "0.", "head": "1."}, holdout=holdout_batches)
        for epoch in range(epochs):
            shuffle = torch.Generator().manual_seed(100 + epoch)
            if buggy_from_epoch is not None and epoch >= buggy_from_epoch:
                shuffle = torch.Generator().manual_seed(int(time.time_ns() % 2**31))  # the bug
            loader = DataLoader(data, batch_size=64, shuffle=True, generator=shuffle)
            for batch_idx, (images, labels, ids) in enumerate(loader):
                run.log_batch(
                    step=step, epoch=epoch, batch_idx=batch_idx, sample_ids=ids, inputs=images, rng=True
                )
                logits = model(images)
                loss = nn.functional.cross_entropy(logits, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                run.log_predictions(
                    logits, step=step, labels=labels, keys={"sample_id": ids}, batch_idx=batch_idx
                )
                run.log({"loss": loss, "acc": (logits.argmax(1) == labels).float().mean()}, step=step)
                step += 1
    return name


@click.command("demo", cls=LakelogCommand)
@click.option("--root", default="runs", show_default=True, help="Lake folder to write the two runs into.")
@click.option("--epochs", default=4, show_default=True, help="Epochs per run (24 steps each).")
def demo_command(root: str, epochs: int) -> None:
    """Train a small model twice (the second with a shuffle bug), then diagnose where the runs part."""
    click.echo(f"training run 'baseline' ({epochs} epochs) …")
    train(root, "baseline", epochs=epochs)
    click.echo("training run 'candidate' (same seed; its shuffle goes unseeded from epoch 2) …")
    train(root, "candidate", epochs=epochs, buggy_from_epoch=min(2, epochs - 1))
    click.echo(f"\n$ lakelog diff {root}/baseline {root}/candidate")
    print_diff(root, "baseline", "candidate")
    click.echo(f"\n$ lakelog doctor {root}/baseline")
    print_doctor(root, "baseline")
    click.echo(
        "\nAsk your own questions in SQL, e.g.\n"
        f"  lakelog sql \"SELECT run, max(value) FROM scalars WHERE name = 'acc' GROUP BY run\" --root {root}"
    )


if __name__ == "__main__":
    demo_command()
