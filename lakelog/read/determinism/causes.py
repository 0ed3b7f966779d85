"""Judging check-determinism's query results: one verdict per check, with its likely cause and fix.

The causes and fixes follow the users' determinism guide; a check's cause may point at what the other
checks found (an RNG that differs, a loader that is not seeded, a run that was resumed). Also turns the
DataLoader worker seeding problems found inside one run into messages. No torch.
"""

from __future__ import annotations

from typing import Any

from lakelog.read.determinism.findings import CHECKS, INCOMPARABLE, WorkerFlag
from lakelog.read.determinism.fixes import (
    FIX_KERNELS,
    FIX_LISTING,
    FIX_SEED,
    FIX_SHUFFLE,
    FIX_WORKERS,
    nothing_seeded_fix,
    reseed_dataset_fix,
    worker_flag,
)

__all__ = ["FIX_KERNELS", "FIX_LISTING", "FIX_SEED", "FIX_SHUFFLE", "FIX_WORKERS", "Judge", "worker_flag"]


def _preview(ids: list | None, n: int = 4) -> str:
    ids = list(ids or [])
    return "[" + ", ".join(map(str, ids[:n])) + (", …" if len(ids) > n else "") + "]"


_IGNORED_ENV = {"host", "pid", "rank"}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = value
    return out


class Judge:
    """Turns the query results into one verdict per check, with the cause the other checks point at."""

    def __init__(
        self,
        run_a: str,
        run_b: str,
        info: tuple[dict, dict],
        batches: dict,
        tensors: dict,
        outputs: dict,
        workers: dict,
        flags: list[WorkerFlag],
    ) -> None:
        self.run_a, self.run_b, self.info = run_a, run_b, info
        self.batches, self.tensors, self.outputs, self.workers = batches, tensors, outputs, workers
        self.flags = flags

    @staticmethod
    def _plain(row: dict, what: str) -> dict[str, Any]:
        if row["n_compared"] == 0 and row.get("n_incomparable"):
            return {"status": "not compared", "detail": INCOMPARABLE}
        if row["n_compared"] == 0:
            return {"status": "not logged"}
        if row["first_step"] is None:
            return {
                "status": "same",
                "compared": row["n_compared"],
                "detail": f"{row['n_compared']} {what} compared",
            }
        return {
            "status": "differs",
            "step": row["first_step"],
            "compared": row["n_compared"],
            "detail": f"{row['n_differ']} of {row['n_compared']} {what} differ",
        }

    def start_step(self) -> int | None:
        return self.batches["sample_ids"]["first_common_step"]

    def dataset_generators(self) -> dict[str, str]:
        """The generators the runs' datasets hold (run.json ``loaders``), by attribute."""
        found: dict[str, str] = {}
        for info in self.info:
            for loader in (info.get("loaders") or {}).values():
                found.update(loader.get("dataset_generators") or {})
        return found

    def nothing_seeded(self) -> bool:
        """Neither run called seed_everything and the torch RNG already differs at the first batch."""
        if any(i.get("seeding") for i in self.info):
            return False
        step, names = self.rng_differs()
        return step is not None and step <= (self.start_step() or 0) and "torch" in names

    def rng_differs(self) -> tuple[int | None, list[str]]:
        rows = {k.removeprefix("rng_"): v for k, v in self.batches.items() if k.startswith("rng_")}
        steps = [r["first_step"] for r in rows.values() if r["first_step"] is not None]
        if not steps:
            return None, []
        return min(steps), [k for k, r in rows.items() if r["first_step"] == min(steps)]

    def resumed(self) -> str | None:
        for name, info in zip((self.run_a, self.run_b), self.info, strict=True):
            if info.get("resumes"):
                after = info["resumes"][0].get("after_step")
                return f"run {name!r} was resumed from a checkpoint" + (
                    f" after step {after}" if after is not None else ""
                )
        return None

    def environment(self) -> dict[str, Any]:
        a, b = (
            {k: i.get(k) for k in ("seed", "config", "seeding")}
            | {
                "environment": {
                    k: v for k, v in (i.get("environment") or {}).items() if k not in _IGNORED_ENV
                }
            }
            for i in self.info
        )
        fa, fb = _flatten(a, "", {}), _flatten(b, "", {})
        keys = sorted(
            (k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k)),
            key=lambda k: (k not in ("seed", "seeding.seed"), k.startswith("environment"), k),
        )
        if not keys:
            return {"status": "same", "compared": len(fa), "detail": f"{len(fa)} settings compared"}
        detail = "; ".join(f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}" for k in keys[:6]) + (
            " …" if len(keys) > 6 else ""
        )
        if any(k.startswith(("seed", "seeding")) for k in keys):
            cause = "the runs were seeded differently (or only one of them called seed_everything)"
        elif any(k.startswith("config") for k in keys):
            cause = "the runs were configured differently"
        elif any("determin" in k or "cudnn" in k or "tf32" in k or "CUBLAS" in k for k in keys):
            cause = "deterministic kernels (or TF32) were on in one run only: kernels may pick different algorithms"
        else:
            cause = (
                "the runs ran on different software or settings: versions, threads and flags change kernels"
            )
        return {
            "status": "differs",
            "detail": detail,
            "cause": cause,
            "compared": len(fa),
            "fix": "run both the same way (same versions, flags and config); " + FIX_SEED,
        }

    def sample_ids(self) -> dict[str, Any]:
        row = self.batches["sample_ids"]
        out = self._plain(row, "batches")
        if out["status"] != "differs":
            return out
        step = row["first_step"]
        set_step = self.batches["sample_set"]["first_step"]
        kind = "different samples" if set_step == step else "the same samples in another order"
        out["detail"] = (
            f"step {step}: {_preview(row['ids_a'])} vs {_preview(row['ids_b'])} ({kind}); "
            f"{row['n_differ']} of {row['n_compared']} batches differ"
        )
        resumed = self.resumed()
        if resumed and step > (self.start_step() or 0):
            out["cause"] = (
                f"{resumed}; from step {step} it replays a different batch order than the other run: "
                "the loader restarted (or reshuffled) its epoch instead of continuing where it stopped"
            )
            out["fix"] = (
                "save the loader's generator state and the position in the epoch in the checkpoint; on "
                "resume restore generator.set_state(...) and skip the batches already consumed"
            )
            return out
        mine, theirs = (i.get("loaders") or {} for i in self.info)
        loaders = [(n, a, theirs[n]) for n, a in mine.items() if n in theirs]
        rng_step, rng_names = self.rng_differs()
        torch_rng_differs = rng_step is not None and rng_step <= step and "torch" in rng_names
        shuffled = [(n, a, b) for n, a, b in loaders if a.get("shuffle") or b.get("shuffle")]
        seeds_differ = [
            (n, a, b) for n, a, b in shuffled if a.get("generator_seed") != b.get("generator_seed")
        ]
        global_rng = [(n, a, b) for n, a, b in shuffled if a.get("generator_seed") is None]
        unseeded = "the DataLoader shuffle is not seeded: " + (
            f"loader {seeds_differ[0][0]!r} has generator seeds {seeds_differ[0][1]['generator_seed']} vs "
            f"{seeds_differ[0][2]['generator_seed']}"
            if seeds_differ
            else "it draws from the global torch RNG, whose state differs between the runs"
        )
        listing = (
            "the dataset itself lists its samples in a different order (an unsorted directory listing, a set, "
            "or a dataset that shuffles internally)"
        )
        if seeds_differ or (global_rng and torch_rng_differs):
            out["cause"], out["fix"] = unseeded, FIX_SHUFFLE
        elif torch_rng_differs and not loaders:
            out["cause"], out["fix"] = "likely " + unseeded, FIX_SHUFFLE
        elif step > (self.start_step() or 0):
            out["cause"] = (
                f"the batches agree until step {step}, then the order departs: something reorders "
                "mid-run (a sampler or dataset shuffling with its own unseeded generator, a per-epoch "
                "reshuffle seeded differently, a filter that drops samples)"
            )
            out["fix"] = (
                "seed every sampler's generator from the run's seed (lakelog.dataloader_generator(seed))"
            )
        elif loaders:
            how = "shuffled identically" if shuffled else "does not shuffle"
            out["cause"], out["fix"] = f"the DataLoader {how}, so {listing}", FIX_LISTING
        elif rng_step is not None or self.batches["rng_torch"]["n_compared"]:
            out["cause"], out["fix"] = f"the torch RNG agrees, so likely {listing}", FIX_LISTING
        else:
            out["cause"] = (
                f"an unseeded DataLoader shuffle, or {listing} (log rng=True and record_workers to tell)"
            )
            out["fix"] = f"{FIX_SHUFFLE}; and {FIX_LISTING}"
        return out

    def inputs(self) -> dict[str, Any]:
        row = self.batches["inputs"]
        if row["n_compared"] == 0 and row.get("n_incomparable"):
            return {"status": "not compared", "detail": INCOMPARABLE}
        if row["n_compared"] == 0:
            ids = self.batches["sample_ids"]
            if ids["n_compared"] and ids["n_differ"] == ids["n_compared"]:
                return {"status": "not compared", "detail": "no batch has the same sample ids in both runs"}
            return {"status": "not logged"}
        out = self._plain(row, "batches with the same sample ids")
        if out["status"] != "differs":
            return out
        step = row["first_step"]
        out["detail"] = (
            f"step {step}: same sample ids {_preview(row['ids_a'])}, different tensors; " + out["detail"]
        )
        worker = self.workers
        rng_step, rng_names = self.rng_differs()
        shared = [f for f in self.flags if f.problem == "shared"]
        held = self.dataset_generators()
        dataset_differs = "dataset" in (worker.get("differ") or [])
        global_rng = rng_step is not None and rng_step <= step
        if held and (dataset_differs or not (worker.get("differ") or global_rng)):
            names = ", ".join(f"dataset.{a} ({k})" for a, k in held.items())
            uses_workers = dataset_differs or any(
                (loader.get("num_workers") or 0) > 0
                for i in self.info
                for loader in (i.get("loaders") or {}).values()
            )
            out["cause"] = (
                f"different inputs for the same sample ids: the dataset draws from its own generator {names}, "
                "which starts from a different state in each run (created unseeded)"
                + (" and is copied unchanged into every DataLoader worker" if uses_workers else "")
            )
            out["fix"] = reseed_dataset_fix(held, uses_workers)
            return out
        if worker.get("differ"):
            out["cause"] = (
                f"different inputs for the same sample ids: the DataLoader workers started from different "
                f"random states ({', '.join(worker['differ'])} differ for worker {worker['worker_id']} of "
                f"loader {worker['loader']!r}), so their random transforms draw differently"
            )
            out["fix"] = FIX_WORKERS
        elif rng_step is not None and rng_step <= step:
            out["cause"] = (
                f"different inputs for the same sample ids: a random transform (augmentation) draws from "
                f"the {'/'.join(rng_names)} RNG, which is in a different state (not seeded the same)"
            )
            out["fix"] = (
                f"{FIX_SEED}; or use deterministic transforms (Resize instead of RandomResizedCrop, "
                "no random flips) where exact repeats matter"
            )
        else:
            out["cause"] = (
                "different inputs for the same sample ids: a random transform draws from a generator "
                "lakelog cannot see (np.random.default_rng() or random.Random() without a seed, a "
                "generator seeded from time), or the data behind an id changed"
            )
            out["fix"] = "seed that generator from the run's seed, or use deterministic transforms"
        if shared:
            out["cause"] += f"; also, {shared[0].message}"
        return out

    def rng(self) -> dict[str, Any]:
        rows = [v for k, v in self.batches.items() if k.startswith("rng_")]
        compared = sum(r["n_compared"] for r in rows)
        if compared == 0:
            return {"status": "not logged"}
        step, names = self.rng_differs()
        if step is None:
            return {"status": "same", "compared": compared, "detail": f"{compared} RNG states compared"}
        later = [
            k.removeprefix("rng_")
            for k, r in self.batches.items()
            if k.startswith("rng_") and r["first_step"] is not None and r["first_step"] > step
        ]
        detail = f"step {step}: the {', '.join(names)} RNG state differs" + (
            f" (later also {', '.join(later)})" if later else ""
        )
        others = {n: self.judge(n)["status"] for n in CHECKS if n not in ("environment", "rng")}
        used = [others[n] for n in ("inputs", "outputs", "loss", "gradients", "update")]
        fix = (
            f"{FIX_SEED}; do not reseed from time (torch.seed()) or draw a run-dependent amount of random "
            "numbers before training"
        )
        if (
            "differs" not in others.values() and "same" in used
        ):  # latent: training does not draw from it (yet)
            return {
                "status": "latent",
                "step": step,
                "compared": compared,
                "fix": "seed it anyway (lakelog.seed_everything(seed)): anything that later draws from it differs",
                "detail": detail + ", but nothing logged after it differs: training does not use it so far",
            }
        return {
            "status": "differs",
            "step": step,
            "compared": compared,
            "detail": detail,
            "fix": fix,
            "cause": (
                f"same data, but the {'/'.join(names)} RNG is in a different state at the start of step "
                f"{step}: dropout and other random ops draw different numbers"
            ),
        }

    def initial_weights(self) -> dict[str, Any]:
        row = self.tensors["initial_weights"]
        out = self._plain(row, "tensors")
        if out["status"] == "differs":
            out["step"] = None  # before the first step, whatever step the capture was stamped with
            out["detail"] = (
                f"{row['n_names']} of {row['n_compared']} tensors differ (captured at step "
                f"{row['first_step']}): {_preview(row['names'], 5)}"
            )
            out["cause"] = (
                "the model was initialized from a different RNG state: built before seeding, or never seeded"
            )
            out["fix"] = (
                "seed before building the model (lakelog.seed_everything(seed) first thing in the script), "
                "or load the same initial state_dict in both runs"
            )
        return out

    def tensors_at(self, name: str) -> dict[str, Any]:
        row = self.tensors[name]
        out = self._plain(row, "tensor captures")
        if out["status"] == "differs":
            out["detail"] = (
                f"step {row['first_step']}: {row['n_names']} tensors differ: {_preview(row['names'], 5)}"
            )
            if name == "gradients":
                out["cause"] = (
                    "same loss, different gradients: a nondeterministic backward kernel (atomic adds in "
                    "index_add/scatter/embedding backward/interpolate on GPU)"
                )
                out["fix"] = FIX_KERNELS
            else:
                resumed = self.resumed()
                out["cause"] = (
                    "same gradients, different weights after the step: the optimizer update differs "
                    "(learning rate or schedule, momentum/Adam state, weight decay, clipping)"
                    + (
                        f"; {resumed}: its optimizer/scheduler state was likely not restored"
                        if resumed
                        else ""
                    )
                )
                out["fix"] = "restore the optimizer and scheduler state_dict on resume; compare the configs"
        return out

    def forward(self, name: str) -> dict[str, Any]:
        row = self.outputs[name]
        out = self._plain(row, "batches" if name == "outputs" else "steps")
        if out["status"] != "differs":
            return out
        if name == "outputs":
            out["detail"] = f"step {row['first_step']}: logits differ; " + out["detail"]
            out["cause"] = (
                "same inputs and weights, different forward outputs: nondeterministic kernels (cuDNN "
                "autotuning, atomics, TF32), or the model in a different train/eval mode"
            )
            out["fix"] = FIX_KERNELS
        else:
            out["detail"] = (
                f"step {row['first_step']}: {row['value_a']!r} vs {row['value_b']!r}; " + out["detail"]
            )
            out["cause"] = (
                "same outputs, different loss: the labels differ, or the loss draws random numbers or "
                "reduces in a nondeterministic order"
            )
            out["fix"] = "log labels with log_predictions(labels=...); seed or remove randomness in the loss"
        return out

    def judge(self, name: str) -> dict[str, Any]:
        if name in ("gradients", "update"):
            return self.tensors_at(name)
        if name in ("outputs", "loss"):
            return self.forward(name)
        out = getattr(self, name)()
        if out.get("status") == "differs" and name != "environment" and self.nothing_seeded():
            out["cause"] = "nothing is seeded (neither run called lakelog.seed_everything); " + out.get(
                "cause", ""
            )
            out["fix"] = nothing_seeded_fix(out.get("fix", ""))
        return out
