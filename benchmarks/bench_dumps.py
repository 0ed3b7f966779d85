"""compare-dumps vs the seeds' way, on two runs of ResNet-50-sized dumps: time and peak memory.

Builds a ResNet-50-shaped network from torch layers (25.6M float32 parameters in 161 tensors, about
100 MB a dump; no download), "trains" two runs by cheap deterministic updates (run b parts from run
a at step ``--part``), and writes 10 dumps per run twice: as the seeds did (``torch.save`` of
``model_state_dict``/``loss``/``acc`` under ``batch_dumps/epoch_000/batch_XXXX.pt``) and with
``run.dump`` (safetensors). Then each way compares the two runs in a fresh subprocess:

- seeds: ``torch.load`` both files whole, loop over the parameters in Python with torch ops (float32);
- lakelog: ``lakelog.compare_dumps.compare_dumps`` (lazy ``safe_open``, one tensor pair at a time, float64).

Peak memory is the child's VmHWM from /proc/self/status (tracemalloc cannot see torch's buffers);
"work" memory is that peak minus the child's resident size after its imports. Both ways read files
the generator just wrote (page cache warm for both); the chart and report files are not written
(the seeds' plotting is not timed either). All files live in a temporary folder, removed at the end.

    python benchmarks/bench_dumps.py            # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _memory() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024  # MiB
    return fields


# -- the model and the two runs --------------------------------------------------------------------
def resnet50_like():
    """ResNet-50's layers and shapes; BatchNorm without running stats keeps it to the parameters."""
    from torch import nn

    def bn(c: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(c, track_running_stats=False)

    def block(cin: int, width: int, stride: int, down: bool) -> nn.Sequential:
        parts = OrderedDict(
            conv1=nn.Conv2d(cin, width, 1, bias=False), bn1=bn(width),
            conv2=nn.Conv2d(width, width, 3, stride, 1, bias=False), bn2=bn(width),
            conv3=nn.Conv2d(width, width * 4, 1, bias=False), bn3=bn(width * 4),
        )
        if down:
            parts["downsample"] = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False), bn(width * 4))
        return nn.Sequential(parts)

    layers, cin = OrderedDict(conv1=nn.Conv2d(3, 64, 7, 2, 3, bias=False), bn1=bn(64)), 64
    for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
        stage = []
        for j in range(blocks):
            stage.append(block(cin, width, (1 if i == 0 else 2) if j == 0 else 1, j == 0))
            cin = width * 4
        layers[f"layer{i + 1}"] = nn.Sequential(*stage)
    layers["fc"] = nn.Linear(2048, 1000)
    return nn.Sequential(layers)


def generate(folder: Path, dumps: int, part: int) -> dict:
    import torch

    import lakelog

    torch.manual_seed(0)
    models = {"a": resnet50_like(), "b": resnet50_like()}
    models["b"].load_state_dict(models["a"].state_dict())
    state = models["a"].state_dict()
    info = {"params": sum(t.numel() for t in state.values()), "tensors": len(state),
            "dump_mb": sum(t.nbytes for t in state.values()) / 2**20}
    runs = {name: lakelog.init(folder / "runs", name=name) for name in models}
    for k in range(dumps):
        step = k * 10  # the seeds dumped every 10 batches
        for name, model in models.items():
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(0.999).add_(0.001)  # the same "update" in both runs...
                    if name == "b" and k >= part:
                        p.add_(1e-5)  # ...until b takes another path
            loss, acc = 2.0 / (1 + k) + (0.01 * (k - part) if name == "b" and k >= part else 0.0), k / dumps
            path = folder / "seeds" / name / "batch_dumps" / "epoch_000" / f"batch_{step:04d}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model_state_dict": model.state_dict(), "loss": loss, "acc": acc}, path)
            runs[name].dump(model, step=step, epoch=0, loss=loss, acc=acc)
    for run in runs.values():
        run.finish()
    return info


# -- the two ways, each run in its own process -----------------------------------------------------
def seeds_way(dir_a: Path, dir_b: Path) -> dict:
    """What analyze_batch_comparisons.py did: load both checkpoints whole, loop in Python."""
    import torch
    import torch.nn.functional as F

    start, baseline = time.perf_counter(), _memory()["VmRSS"]
    keys = sorted(p.relative_to(dir_a).as_posix() for p in dir_a.rglob("*.pt"))
    steps, first = [], None
    for key in keys:
        a = torch.load(dir_a / key, map_location="cpu")
        b = torch.load(dir_b / key, map_location="cpu")
        ss = 0.0
        for name, ta in a["model_state_dict"].items():
            ta, tb = ta.float(), b["model_state_dict"][name].float()
            diff = ta - tb
            l2 = torch.norm(diff).item()
            F.cosine_similarity(ta.flatten(), tb.flatten(), dim=0).item()
            if diff.abs().max().item() > 0 and first is None:
                first = key
            ss += l2 * l2
        steps.append(ss**0.5)
        del a, b
    return {"seconds": time.perf_counter() - start, "baseline_mb": baseline, **_memory(),
            "l2": steps, "first": first}


def lakelog_way(dir_a: Path, dir_b: Path) -> dict:
    from lakelog.compare_dumps import compare_dumps

    start, baseline = time.perf_counter(), _memory()["VmRSS"]
    result = compare_dumps(dir_a, dir_b, progress=False)
    first = result.summary["first_difference"]
    return {"seconds": time.perf_counter() - start, "baseline_mb": baseline, **_memory(),
            "l2": result.steps["l2"].to_list(), "first": first and first["step"], "torch": "torch" in sys.modules}


def child(way: str, dir_a: Path, dir_b: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", way, str(dir_a), str(dir_b)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode:
        raise SystemExit(f"{way} worker failed:\n{proc.stderr}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dumps", type=int, default=10)
    parser.add_argument("--part", type=int, default=2, help="dump index from which run b differs")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of both ways; the best time counts")
    parser.add_argument("--worker", nargs=3, metavar=("WAY", "A", "B"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        way, a, b = args.worker
        print(json.dumps((seeds_way if way == "seeds" else lakelog_way)(Path(a), Path(b))))
        return

    with tempfile.TemporaryDirectory(prefix="lakelog-bench-dumps-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        info = generate(folder, args.dumps, args.part)
        print(f"model: {info['params'] / 1e6:.1f}M parameters in {info['tensors']} tensors, "
              f"{info['dump_mb']:.0f} MiB a dump; 2 runs x {args.dumps} dumps, each written as .pt and "
              f".safetensors in {time.perf_counter() - t:.0f} s")
        dirs = {"seeds": (folder / "seeds" / "a", folder / "seeds" / "b"),
                "lakelog": (folder / "runs" / "a", folder / "runs" / "b")}
        results: dict[str, list[dict]] = {"seeds": [], "lakelog": []}
        for _ in range(args.repeat):
            for way in results:
                results[way].append(child(way, *dirs[way]))
    seeds, ours = (min(results[w], key=lambda r: r["seconds"]) for w in ("seeds", "lakelog"))
    peak_s, peak_o = max(r["VmHWM"] for r in results["seeds"]), max(r["VmHWM"] for r in results["lakelog"])
    work_s = max(r["VmHWM"] - r["baseline_mb"] for r in results["seeds"])
    work_o = max(r["VmHWM"] - r["baseline_mb"] for r in results["lakelog"])
    agree = all(abs(x - y) <= 1e-4 * max(abs(x), 1e-12) for x, y in zip(seeds["l2"], ours["l2"], strict=True))
    print(f"{'':26}{'seeds (torch.load)':>20}{'lakelog':>12}{'ratio':>9}")
    print(f"{'compare time, s':26}{seeds['seconds']:>20.2f}{ours['seconds']:>12.2f}{seeds['seconds'] / ours['seconds']:>8.1f}x")
    print(f"{'process time, s':26}{seeds['process_s']:>20.2f}{ours['process_s']:>12.2f}"
          f"{seeds['process_s'] / ours['process_s']:>8.1f}x")
    print(f"{'peak RSS, MiB':26}{peak_s:>20.0f}{peak_o:>12.0f}{peak_s / peak_o:>8.1f}x")
    print(f"{'peak RSS over imports, MiB':26}{work_s:>20.0f}{work_o:>12.0f}{work_s / work_o:>8.1f}x")
    print(f"{'RSS after imports, MiB':26}{seeds['baseline_mb']:>20.0f}{ours['baseline_mb']:>12.0f}")
    print(f"same answer: per-step L2 agree to 1e-4: {agree}; first difference: seeds {seeds['first']}, "
          f"lakelog step {ours['first']}; lakelog imported torch: {ours['torch']}")
    print("ratios are seeds / lakelog: above 1 means lakelog is faster or smaller")


if __name__ == "__main__":
    main()
