"""compare-dumps vs the seeds' way, on two runs of ResNet-50-sized dumps: time and peak memory.

Builds a ResNet-50-shaped network from torch layers (25.6M float32 parameters in 161 tensors, about
100 MB a dump; no download), "trains" two runs by cheap deterministic updates (run b parts from run
a at step ``--part``), and writes 10 dumps per run twice: as the seeds did (``torch.save`` of
``model_state_dict``/``loss``/``acc`` under ``batch_dumps/epoch_000/batch_XXXX.pt``) and with
``run.dump`` (safetensors). Then each way compares the two runs in a fresh subprocess:

- seeds: ``torch.load`` both files whole, loop over the parameters in Python with torch ops (float32),
  once with torch's default threads and once with one thread (threads that wait for busy cores
  make the default much slower on a loaded machine; the better of the two is the one compared);
- lakelog: ``lakelog.read.dumps.compare.compare_dumps`` (lazy ``safe_open``, one tensor pair at a time, float64).

Peak memory is the child's VmHWM from /proc/self/status (tracemalloc cannot see torch's buffers);
"work" memory is that peak minus the child's resident size after its imports. Both ways read files
the generator just wrote (page cache warm for both); the chart and report files are not written
(the seeds' plotting is not timed either). All files live in a temporary folder, removed at the end.

    python benchmarks/bench_dumps.py   # about 1 minute on 2 cores at load 5; 4 when the cores are saturated
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
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
    """ResNet-50 without BatchNorm running stats, so a dump holds the parameters only."""
    from resnet import resnet50  # benchmarks/resnet.py; imported here: the lakelog child must not load torch

    return resnet50(track_running_stats=False)


def generate(folder: Path, dumps: int, part: int) -> dict:
    import torch

    import lakelog

    torch.manual_seed(0)
    models = {"a": resnet50_like(), "b": resnet50_like()}
    models["b"].load_state_dict(models["a"].state_dict())
    state = models["a"].state_dict()
    info = {
        "params": sum(t.numel() for t in state.values()),
        "tensors": len(state),
        "dump_mb": sum(t.nbytes for t in state.values()) / 2**20,
    }
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
    return {
        "seconds": time.perf_counter() - start,
        "baseline_mb": baseline,
        **_memory(),
        "l2": steps,
        "first": first,
    }


def lakelog_way(dir_a: Path, dir_b: Path) -> dict:
    from lakelog.read.dumps.compare import compare_dumps

    start, baseline = time.perf_counter(), _memory()["VmRSS"]
    result = compare_dumps(dir_a, dir_b, progress=False)
    first = result.summary["first_difference"]
    return {
        "seconds": time.perf_counter() - start,
        "baseline_mb": baseline,
        **_memory(),
        "l2": result.steps["l2"].to_list(),
        "first": first and first["step"],
        "torch": "torch" in sys.modules,
    }


def child(way: str, dir_a: Path, dir_b: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", way, str(dir_a), str(dir_b)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode:
        raise SystemExit(f"{way} worker failed:\n{proc.stderr}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - started}


WAYS = {
    "seeds": "seeds, torch threads",
    "seeds-1t": "seeds, 1 thread",
    "lakelog": "lakelog",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dumps", type=int, default=10)
    parser.add_argument("--part", type=int, default=2, help="dump index from which run b differs")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every way; the best time counts")
    parser.add_argument("--worker", nargs=3, metavar=("WAY", "A", "B"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        way, a, b = args.worker
        if (
            way == "seeds-1t"
        ):  # torch's default threads fight for 2 busy cores; one thread is the fairer rival
            import torch

            torch.set_num_threads(1)
        print(json.dumps((lakelog_way if way == "lakelog" else seeds_way)(Path(a), Path(b))))
        return

    print(
        f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings are noisy on a busy machine)"
    )
    with tempfile.TemporaryDirectory(prefix="lakelog-bench-dumps-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        info = generate(folder, args.dumps, args.part)
        print(
            f"model: {info['params'] / 1e6:.1f}M parameters in {info['tensors']} tensors, "
            f"{info['dump_mb']:.0f} MiB a dump; 2 runs x {args.dumps} dumps, each written as .pt and "
            f".safetensors in {time.perf_counter() - t:.0f} s"
        )
        seeds_dirs = (folder / "seeds" / "a", folder / "seeds" / "b")
        dirs = {
            "seeds": seeds_dirs,
            "seeds-1t": seeds_dirs,
            "lakelog": (folder / "runs" / "a", folder / "runs" / "b"),
        }
        results: dict[str, list[dict]] = {way: [] for way in WAYS}
        for _ in range(args.repeat):
            for way in WAYS:
                results[way].append(child(way, *dirs[way]))
    best = {way: min(runs, key=lambda r: r["seconds"]) for way, runs in results.items()}
    work = {way: max(r["VmHWM"] - r["baseline_mb"] for r in runs) for way, runs in results.items()}
    peak = {way: max(r["VmHWM"] for r in runs) for way, runs in results.items()}
    ours = best["lakelog"]
    rows = [
        ("compare time, s", {w: best[w]["seconds"] for w in WAYS}, ".2f"),
        ("process time, s", {w: best[w]["process_s"] for w in WAYS}, ".2f"),
        ("peak RSS, MiB", peak, ".0f"),
        ("peak RSS over imports, MiB", work, ".0f"),
        ("RSS after imports, MiB", {w: best[w]["baseline_mb"] for w in WAYS}, ".0f"),
    ]
    print(f"{'':28}" + "".join(f"{label:>22}" for label in WAYS.values()) + f"{'seeds best / lakelog':>22}")
    for label, values, spec in rows:
        seeds_best = min(values["seeds"], values["seeds-1t"])
        ratio = f"{seeds_best / values['lakelog']:.1f}x" if "after imports" not in label else ""
        print(f"{label:28}" + "".join(f"{format(values[w], spec):>22}" for w in WAYS) + f"{ratio:>22}")
    rel = max(
        (abs(x - y) / y for x, y in zip(best["seeds"]["l2"], ours["l2"], strict=True) if y), default=0.0
    )
    print(
        f"same answer: per-step L2 differ by at most {rel:.1e} relative (the seeds' float32 torch.norm; "
        f"lakelog sums in float64); first difference: seeds {best['seeds']['first']}, lakelog step {ours['first']}; "
        f"lakelog imported torch: {ours['torch']}"
    )
    print(
        f"load average after: {os.getloadavg()[0]:.1f}. Ratios divide the better seeds figure by lakelog's: above 1, "
        "lakelog is faster or smaller. lakelog's RSS after imports is the interpreter, numpy, safetensors "
        "and polars; torch, DuckDB and pyarrow's Parquet are not loaded by compare-dumps"
    )


if __name__ == "__main__":
    main()
