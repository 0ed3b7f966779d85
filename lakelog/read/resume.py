"""What a resume restored: for each resume point of either run, part by part (read side: no torch).

A job that is interrupted and resumed must reproduce the uninterrupted run. At each resume point
(run.json's ``resumes``: the step the run resumes after) ``resume_points`` says, for the weights, the
optimizer state (momentum, Adam moments), the LR scheduler, the RNG states and the loader position,
whether the resumed process restored it, and how it knows:

- weights and optimizer state: the state the resumed process starts from (``resume:*`` rows that
  ``run.watch`` writes at the resume point) against the state at that step before the interruption
  (the run's own capture of that step, else the reference run's); without a resume capture, the first
  resumed step's gradients (same gradients: the weights were restored) and update (same gradients,
  different update: the optimizer state was not);
- LR scheduler: the learning rates logged from the resume step on (``lr``, ``lr/<group>``);
- RNG states: the RNG fingerprints at the first resumed batches (``log_batch(rng=True)``);
- loader position: the sample order from the resume step on; a resumed loader that restarted its
  epoch replays earlier batches, and the step it replays is named.

A part is ``restored``, ``not restored`` (with the step where it shows and what differs),
``not captured`` (nothing logged tells) or ``unknown`` (the learning rate departs at the resume step,
where the optimizer, which holds it, was not restored either). ``identical`` is true when every part that can be judged
was restored and no layer of evidence differs from the resume step on.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import polars as pl

from lakelog.lake.layout import RUN_FILE, Lake
from lakelog.read.querylib import query

PARTS = ("weights", "optimizer", "lr_scheduler", "rng", "loader")
"""The parts of a training state a resume must restore, in the order they are reported."""
LAYERS = ("batch_order", "rng", "weights", "predictions", "optimizer")
"""first_divergence layers reported per resume point (``layers``), compared from the resume step on."""


def run_info(con: duckdb.DuckDBPyConnection, run: str) -> tuple[dict[str, Any], str | None]:
    """run.json of ``run`` in this connection, and why it could not be read (None when it could).

    ``runs.root`` is a lake root, or the run folder itself for a run given as a folder.
    """
    row = con.execute("SELECT root FROM runs WHERE run = ?", [run]).fetchall()
    if not row or row[0][0] is None:
        return {}, f"run {run!r}: no root recorded, run.json not read"
    try:
        lake = Lake.open(row[0][0])
        path = lake.join(RUN_FILE)
        if not lake.is_file(path):
            path = lake.join(run, RUN_FILE)
        info = json.loads(lake.read_text(path))
    except (OSError, ValueError, RecursionError) as exc:
        return {}, f"run {run!r}: cannot read its {RUN_FILE} ({exc}); its resumes are not checked"
    if not isinstance(info, dict):
        return {}, f"run {run!r}: its {RUN_FILE} is not a JSON object; its resumes are not checked"
    return info, None


def resume_step(con: duckdb.DuckDBPyConnection, run: str, entry: dict[str, Any]) -> int | None:
    """The first step of the resumed part of a run.json resume record (None when nothing tells)."""
    if entry.get("step") is not None:
        return int(entry["step"])
    after = entry.get("resumed_from", entry.get("after_step"))
    # the first step the resumed process logged: later than after + 1 when the checkpoint is newer than
    # the lake's committed step (a crash lost the last flushes)
    logged = (
        query("internal.resume_step", con=con, run=run, at=entry["at"])["step"][0]
        if entry.get("at")
        else None
    )
    steps = [int(s) for s in (None if after is None else int(after) + 1, logged) if s is not None]
    return max(steps) if steps else None


def _part(status: str, detail: str, step: int | None = None) -> dict[str, Any]:
    return {"status": status, "step": step, "detail": detail}


def _names(names: list[str] | None, n: int) -> str:
    names = list(names or [])
    return ", ".join(names[:4]) + (", ..." if n > 4 else "")


def _state_parts(
    con: duckdb.DuckDBPyConnection, run: str, other: str, step: int, layers: dict[str, dict]
) -> dict[str, dict[str, Any]]:
    """Weights and optimizer state: the resume capture, else the first resumed step's evidence."""
    rows = {
        r["family"]: r
        for r in query("internal.resume_state", con=con, run=run, other=other, step=step - 1).to_dicts()
    }
    out: dict[str, dict[str, Any]] = {}
    for part, family, what in (
        ("weights", "weights", "tensors"),
        ("optimizer", "optimizer", "state tensors"),
    ):
        row = rows.get(family)
        if row is None or row["n_compared"] == 0:
            continue
        where = "the interrupted process" if row["compared_with"] == "own" else "the reference run"
        if row["n_differing"] == 0:
            out[part] = _part("restored", f"{row['n_compared']} {what} equal {where}'s at step {step - 1}")
        elif part == "optimizer" and row["n_missing"] == row["n_compared"]:
            out[part] = _part(
                "not restored",
                f"the resumed optimizer has no state ({_names(row['names'], row['n_differing'])} missing): "
                "momentum / Adam moments start from zero",
                step,
            )
        else:
            out[part] = _part(
                "not restored",
                f"{row['n_differing']} of {row['n_compared']} {what} differ from {where}'s at step {step - 1}: "
                + _names(row["names"], row["n_differing"]),
                step,
            )
    grads, weights = layers.get("gradients", {}), layers.get("weights", {})
    if "weights" not in out:
        if grads.get("status") == "same" or (grads.get("first_step") or -1) > step:
            out["weights"] = _part("restored", f"the gradients of step {step} agree")
        elif grads.get("status") == "differs":
            out["weights"] = _part(
                "not captured",
                f"the gradients of step {grads['first_step']} differ, which restored weights fed other "
                "batches or random numbers could also cause (watch the model to capture the resume point)",
            )
        else:
            out["weights"] = _part("not captured", "no weights or gradients captured around the resume")
    if "optimizer" not in out:
        if (
            weights.get("status") == "differs"
            and weights["first_step"] == step
            and grads.get("first_step") != step
        ):
            out["optimizer"] = _part(
                "not restored",
                f"same gradients, different update at step {step}: {weights['detail']}",
                step,
            )
        elif weights.get("status") == "same" or (weights.get("first_step") or -1) > step:
            out["optimizer"] = _part("restored", f"the update of step {step} agrees")
        else:
            out["optimizer"] = _part("not captured", "no update captured at the resume step")
    return out


def _lr_part(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, step: int) -> dict[str, Any]:
    row = query("internal.resume_lr", con=con, run_a=run_a, run_b=run_b, from_step=step).row(0, named=True)
    if row["n_compared"] == 0:
        return _part("not captured", "no learning rate logged after the resume (log lr, or run.watch)")
    if row["first_step"] is None:
        return _part("restored", f"the learning rates agree from step {step} on")
    return _part(
        "not restored",
        f"the learning rate departs at step {row['first_step']} ({row['detail']}): the scheduler restarted",
        int(row["first_step"]),
    )


def _layer_part(layer: dict[str, Any], what: str, missing: str) -> dict[str, Any]:
    if layer.get("status") == "differs":
        return _part("not restored", f"{layer['detail']}", layer["first_step"])
    if layer.get("status") == "same":
        return _part("restored", f"the {what} agree{'s' if what.endswith('state') else ''} after the resume")
    return _part("not captured", missing)


def _loader_part(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, layer: dict, side: str) -> dict:
    out = _layer_part(layer, "batches", "no batches logged after the resume (log_batch(sample_ids=...))")
    if out["status"] != "not restored":
        return out
    rows = query("batch_order_mismatch", con=con, run_a=run_a, run_b=run_b, from_step=layer["first_step"])
    first = rows.filter(pl.col("kind") != "same").head(1).to_dicts()
    out["replays_step"] = None
    if first:
        replay = first[0]["same_as_a_step"] if side == "B" else None
        out["replays_step"] = replay
        if replay is not None:
            out["detail"] = (
                f"at step {first[0]['step']} the resumed run feeds the batch of step {replay} again: the loader "
                "restarted instead of continuing where it stopped"
            )
    return out


def resume_points(
    con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, *, tol: float = 0.0
) -> tuple[list[dict[str, Any]], list[str]]:
    """One dict per resume point of either run (see the module docstring), and notes on what was unread.

    Each dict: run, side (A/B), step (the first resumed step), after_step, at, ``restored`` (part ->
    {status, step, detail}), ``identical``, ``not_restored`` (the parts that were not), ``layers``
    (first_divergence from the resume step: layer -> {status, first_step, detail}) and
    ``replays_a_step`` (the step of A whose batch B feeds again, if it restarted its loader).
    """
    found, notes = [], []
    for side, run, other in (("A", run_a, run_b), ("B", run_b, run_a)):
        info, error = run_info(con, run)
        if error:
            notes.append(error)
        for entry in info.get("resumes") or []:
            step = resume_step(con, run, entry)
            if step is None:
                notes.append(f"run {run!r}: a resume at {entry.get('at')} logged no step afterwards")
                continue
            frame = query("first_divergence", con=con, run_a=run_a, run_b=run_b, tol=tol, from_step=step)
            layers = {r["layer"]: r for r in frame.to_dicts()}
            parts = _state_parts(con, run, other, step, layers)
            parts["lr_scheduler"] = _lr_part(con, run_a, run_b, step)
            lr = parts["lr_scheduler"]
            if (
                lr["status"] == "not restored"
                and lr["step"] == step
                and parts["optimizer"]["status"] == "not restored"
            ):
                lr["status"] = (
                    "unknown"  # the rate lives in the optimizer's param_groups, not restored either
                )
                lr["detail"] += "; the optimizer, whose param_groups hold the rate, was not restored either"
            parts["rng"] = _layer_part(
                layers.get("rng", {}), "RNG state", "no RNG states logged (log_batch(rng=True))"
            )
            parts["loader"] = _loader_part(con, run_a, run_b, layers.get("batch_order", {}), side)
            restored = {p: parts[p] for p in PARTS}
            not_restored = [p for p in PARTS if restored[p]["status"] == "not restored"]
            differs = [k for k, v in layers.items() if v["status"] == "differs"]
            found.append(
                {
                    "run": run,
                    "side": side,
                    "step": step,
                    "after_step": step - 1,
                    "at": entry.get("at"),
                    "restored": restored,
                    "not_restored": not_restored,
                    "identical": not not_restored and not differs,
                    "layers": {
                        k: {"status": v["status"], "first_step": v["first_step"], "detail": v["detail"]}
                        for k, v in layers.items()
                        if k in LAYERS
                    },
                    "replays_a_step": restored["loader"].get("replays_step"),
                }
            )
    return found, notes
