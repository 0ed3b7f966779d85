"""Where and how two runs part: the whole story behind ``lakelog diff`` (read side: no torch).

``diff_runs`` asks the query library (first_divergence, batch_order_mismatch, prediction_diff,
param_diff, group_drift, env_diff, step_overlap) and puts the answers in one ``DiffResult``, which the
CLI prints and the report draws. The layer that parted first is the cause to look at: the layers
after it usually differ only because it did.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import polars as pl

from lakelog.errors import InvalidArgumentError, QueryError, RunNotFoundError
from lakelog.lake.checks import did_you_mean, non_negative_number
from lakelog.lake.layout import RUN_FILE, Lake
from lakelog.read.beside import Beside
from lakelog.read.determinism.findings import INCOMPARABLE, DeterminismReport
from lakelog.read.determinism.report import LAYER_OF_CHECK, report_evidence, report_on
from lakelog.read.querylib import query
from lakelog.read.resume import resume_points, run_info
from lakelog.read.views import connect

IDENTICAL_STATUSES = ("same", "not captured", "latent")


@dataclass
class DiffResult:
    """The answer of ``diff_runs``; every frame is a polars DataFrame (possibly empty).

    - ``identical``: every layer both runs captured is the same, over the same steps.
    - ``layers``: first_divergence, one row per layer (layer, status, first_step, epoch, batch_idx,
      n_a, n_b, n_compared, n_differing, detail, is_first), earliest divergence first.
    - ``first_layer`` / ``first_step``: the layer that parted first and its step (None if none).
    - ``batch``: the batch_order_mismatch row at the first batch-order divergence (kind, overlap,
      first_pos, same_as_a_step, repeat_of_b_step, ids_a, ids_b); ``batch_kinds``: per kind, its
      first step and number of batches.
    - ``samples``: prediction_diff at the first predictions divergence (the differing samples), matched
      by their key columns once the batch order differs (``only_in`` names a sample one run lacks).
    - ``params``: param_diff at the first weights divergence (differing tensors first).
    - ``group_drift``: one row per parameter group: first_drift_step, drift_rank, max_rel_gap and the
      last step's rel_gap / equal_numel_frac; ``group_drift_steps``: the full per-step frame.
    - ``environment``: env_diff (section, key, value_a, value_b).
    - ``steps``: step_overlap (side A / B / common, first_step, last_step, n_steps).
    - ``resume``: one dict per resume point of either run (``lakelog.read.resume.resume_points``): run,
      side, step (the first resumed step), ``restored`` (weights, optimizer, lr_scheduler, rng, loader:
      each restored / not restored / not captured, with the step and what differs), ``identical``,
      ``not_restored``, ``layers`` (first_divergence from the resume step) and ``replays_a_step``.
    - ``notes``: plain sentences about what could not be compared and why.
    - ``cause``: the first cause as check-determinism judges it (name, title, step, detail, cause, fix,
      and ``layer``: the layer of ``layers`` it reads, None for the environment), or None. Ties at a
      step go in causal order (environment and seeding, sample order, inputs, RNG, initial weights,
      forward, loss, gradients, update), in ``layers`` and here alike; an RNG difference nothing
      logged after it shows is ``latent`` in ``layers``, not a difference.
    """

    run_a: str
    run_b: str
    tol: float
    identical: bool
    layers: pl.DataFrame
    first_layer: str | None = None
    first_step: int | None = None
    batch: dict[str, Any] | None = None
    batch_kinds: pl.DataFrame = field(default_factory=pl.DataFrame)
    samples: pl.DataFrame = field(default_factory=pl.DataFrame)
    params: pl.DataFrame = field(default_factory=pl.DataFrame)
    group_drift: pl.DataFrame = field(default_factory=pl.DataFrame)
    group_drift_steps: pl.DataFrame = field(default_factory=pl.DataFrame)
    environment: pl.DataFrame = field(default_factory=pl.DataFrame)
    steps: pl.DataFrame = field(default_factory=pl.DataFrame)
    resume: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cause: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (frames as lists of row dicts), e.g. for ``lakelog diff --json``."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.to_dicts() if isinstance(value, pl.DataFrame) else value
        return out

    def layer(self, name: str) -> dict[str, Any]:
        """One layer's row of ``layers`` as a dict (raises KeyError for an unknown layer)."""
        rows = self.layers.filter(pl.col("layer") == name).to_dicts()
        if not rows:
            raise KeyError(name)
        return rows[0]


def resolve(root: Any, *runs: str) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """A connection over the given runs and their names: each is a run folder or a name under ``root``."""
    folders: list[str] = []
    for run in runs:
        if not isinstance(run, str) or not run:
            raise InvalidArgumentError(f"run: expected a run name or a run folder, got {run!r}")
        if os.path.isfile(os.path.join(run, RUN_FILE)):
            folders.append(os.path.abspath(run))
            continue
        if os.sep in run:  # run names hold no '/': a path that is not a run folder; name it, not --root
            what = "a file" if os.path.isfile(run) else f"a folder without {RUN_FILE}"
            what = what if os.path.exists(run) else "a path that does not exist"
            raise RunNotFoundError(f"run: {run!r} is {what}, not a run folder")
        lake = Lake.open(root)
        if not lake.exists(lake.base):
            raise RunNotFoundError(
                f"root: {lake.root!r} does not exist (runs are folders, or names under --root)"
            )
        names = lake.run_names()
        if run not in names:
            known = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "none"
            raise RunNotFoundError(
                f"run {run!r} not found{did_you_mean(run, names)}: not a run folder, nor a run in "
                f"{lake.root} (runs there: {known})"
            )
        folders.append(lake.join(run))
    names = [os.path.basename(f.rstrip("/")) for f in folders]
    if len(set(names)) < len(set(folders)):
        return _labelled(folders)
    return connect(sorted(set(folders))), names


def _labels(folders: list[str]) -> list[str]:
    """Names for runs of one name in different folders: the name and the nearest parent folder that
    tells them apart, e.g. /x/exp/a and /y/exp/a -> 'a (x)' and 'a (y)'."""
    parts = [os.path.normpath(f).split(os.sep) for f in folders]
    name = parts[0][-1]
    for back in range(2, max(len(p) for p in parts) + 1):
        tags = [p[-back] if len(p) >= back else "" for p in parts]
        if len(set(tags)) == len(tags):
            return [f"{name} ({tag or '/'})" for tag in tags]
    return [f"{name} ({os.path.dirname(f)})" for f in folders]


def _labelled(folders: list[str]) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """Runs that share a name, compared under labels: a temporary folder of links named by the labels
    (the views tell runs apart by folder name); the links are removed at exit, the runs are not touched."""
    if not all(os.path.isdir(f) for f in folders):
        raise InvalidArgumentError(
            f"runs from different folders share the name {os.path.basename(folders[0])!r} and are not both "
            "on local disk; copy or rename one of them (e.g. cp -r old/baseline runs/baseline-old)"
        )
    labels = _labels(folders)
    links = tempfile.mkdtemp(prefix="lakelog-diff-")
    atexit.register(shutil.rmtree, links, True)
    for folder, label in zip(folders, labels, strict=True):
        os.symlink(os.path.abspath(folder), os.path.join(links, label), target_is_directory=True)
    return connect([os.path.join(links, label) for label in labels]), labels


def connect_runs(root_or_con: Any, runs: list[str]) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """A connection and run names from a lake root (runs given as names or folders) or an open connection."""
    if isinstance(root_or_con, duckdb.DuckDBPyConnection):
        known = set(root_or_con.sql("SELECT run FROM runs").pl()["run"].to_list())
        for run in runs:
            if run not in known:
                raise RunNotFoundError(
                    f"run {run!r} is not in this connection (runs: {', '.join(sorted(known)) or 'none'})"
                )
        return root_or_con, runs
    return resolve(root_or_con, *runs)


def _group_summary(steps: pl.DataFrame) -> pl.DataFrame:
    if steps.is_empty():
        return steps
    last = steps.sort("step").group_by("group", maintain_order=True).last()
    return last.select(
        "group",
        "first_drift_step",
        "drift_rank",
        "max_rel_gap",
        pl.col("rel_gap").alias("last_rel_gap"),
        pl.col("equal_numel_frac").alias("last_equal_numel_frac"),
        pl.col("step").alias("last_step"),
    ).sort("drift_rank", "group")


def _notes(layers: pl.DataFrame, steps: pl.DataFrame, run_a: str, run_b: str) -> list[str]:
    notes = []
    side = {r["side"]: r for r in steps.to_dicts()}
    a, b, common = side["A"], side["B"], side["common"]
    if a["n_steps"] != b["n_steps"] or a["last_step"] != b["last_step"] or a["first_step"] != b["first_step"]:
        notes.append(
            f"the runs have different lengths: {run_a} logs steps {a['first_step']}-{a['last_step']} "
            f"({a['n_steps']}), {run_b} {b['first_step']}-{b['last_step']} ({b['n_steps']}); "
            f"{common['n_steps']} steps in common are compared"
        )
    for row in layers.to_dicts():
        if row["status"].startswith("missing in"):
            who = run_b if row["status"].endswith("B") else run_a
            notes.append(f"{row['layer']}: only one run captured it ({who} did not), so it is not compared")
        elif row["status"] == "no overlap":
            notes.append(f"{row['layer']}: both runs captured it, but at no common step")
        elif row["status"] == "not comparable":
            notes.append(f"{row['layer']}: {INCOMPARABLE}")
    sparse = layers.filter((pl.col("status") == "differs") & ~pl.col("placed").fill_null(True))
    if not sparse.is_empty():
        placed = layers.filter((pl.col("status") == "differs") & pl.col("placed").fill_null(False))
        notes.append(
            "logged too sparsely to place where they part: "
            + ", ".join(
                f"{r['layer']} (between step {r['last_equal_step'] + 1} and {r['first_step']})"
                if r["last_equal_step"] is not None
                else f"{r['layer']} (at or before step {r['first_step']})"
                for r in sparse.to_dicts()
            )
            + (
                "; placed at their step: " + ", ".join(placed["layer"].to_list())
                if not placed.is_empty()
                else "; no differing layer was logged densely enough: log every step around the range"
            )
        )
    if layers.filter(pl.col("n_compared") > 0).is_empty():
        notes.append(
            "no layer of evidence was captured by both runs: log predictions, batches and the loss, "
            "or run.watch the model, in both"
        )
    rng = layers.filter(pl.col("layer") == "rng")
    if rng.height and rng["status"][0] == "not captured":
        notes.append(
            "RNG states were not captured: log_batch(..., rng=True) records them at each batch start"
        )
    return notes


def _verdict(
    con: duckdb.DuckDBPyConnection,
    run_a: str,
    run_b: str,
    loss_name: str,
    tensors: dict[str, dict[str, Any]],
    evidence: dict[str, Any],
) -> DeterminismReport:
    """check-determinism's judgment of the pair, so diff names the same first cause with its fix."""
    info = (run_info(con, run_a)[0], run_info(con, run_b)[0])
    root = con.execute("SELECT root FROM runs WHERE run = ?", [run_a]).fetchall()
    return report_on(
        con,
        run_a,
        run_b,
        info,
        root=root[0][0] if root else "",
        loss_name=loss_name,
        tensors=tensors,
        evidence=evidence,
    )


def _tensor_evidence(
    con: duckdb.DuckDBPyConnection, layers: pl.DataFrame, pair: dict[str, str], at: dict[int, pl.DataFrame]
) -> dict[str, dict[str, Any]]:
    """The tensor evidence of the determinism checks from first_divergence's layers, with the differing
    tensors read at their first step only (param_diff of one step), not every capture compared again;
    ``at`` keeps each step's param_diff, so diff reuses it for its own ``params``."""
    out: dict[str, dict[str, Any]] = {}
    for check, layer, differs in (
        ("initial_weights", "initial_weights", pl.col("kind").str.starts_with("initial:") & ~pl.col("equal")),
        ("gradients", "gradients", (pl.col("kind") == "param") & ~pl.col("grad_equal")),
        ("update", "weights", (pl.col("kind") == "param") & ~pl.col("equal")),
    ):
        row = layers.filter(pl.col("layer") == layer).row(0, named=True)
        step, names = row["first_step"] if row["status"] == "differs" else None, []
        if step is not None:
            if step not in at:
                at[step] = query("param_diff", con=con, step=int(step), **pair)
            names = sorted(at[step].filter(differs.fill_null(False))["name"].to_list())
        out[check] = {
            "n_compared": row["n_compared"],
            "first_step": step,
            "n_differ": row["n_differing"],
            "n_names": len(names),
            "names": names[:20],
            "rank": None,
        }
    return out


def _latent_rng(layers: pl.DataFrame) -> pl.DataFrame:
    """The RNG layer differs but nothing logged after it does (training does not draw from it so far)."""
    latent = (pl.col("layer") == "rng") & (pl.col("status") == "differs")
    layers = layers.with_columns(
        status=pl.when(latent).then(pl.lit("latent")).otherwise(pl.col("status")),
        is_first=pl.when(latent).then(False).otherwise(pl.col("is_first")),
    )
    if layers.filter(pl.col("is_first")).is_empty():
        first = layers.filter(pl.col("status") == "differs").head(1)["layer"].to_list()
        layers = layers.with_columns(is_first=pl.col("layer").is_in(first))
    return layers


def diff_runs(
    root_or_con: Any,
    run_a: str,
    run_b: str,
    *,
    tol: float = 0.0,
    loss_name: str = "loss",
    acc_name: str = "acc",
) -> DiffResult:
    """Compare two runs layer by layer; ``root_or_con`` is a lake root or a ``lakelog.connect`` connection.

    Runs are names in the lake (or run folders when a root is given). ``tol`` is the largest logit
    difference still counted as equal (0: bit-identical). Raises RunNotFoundError for an unknown run
    and InvalidArgumentError when the runs share no step at all.
    """
    tol = non_negative_number(tol, "tol")
    con, (run_a, run_b) = connect_runs(root_or_con, [run_a, run_b])
    pair = {"run_a": run_a, "run_b": run_b}
    # first_divergence is mostly planning, on one core, and group_drift a scan of every params row: each
    # runs next to short queries on a cursor, and never next to the other (their memory would add up)
    overlap = Beside(
        con,
        lambda cur: (
            query("step_overlap", con=cur, **pair),
            report_evidence(cur, run_a, run_b, loss_name=loss_name),
        ),
    )
    try:
        layers: pl.DataFrame | BaseException = query(
            "first_divergence", con=con, tol=float(tol), loss_name=loss_name, **pair
        )
    except QueryError as exc:  # runs that share no step: that is the error to give first
        layers = exc
    steps, evidence = overlap.result()
    side = {r["side"]: r for r in steps.to_dicts()}
    for s in ("A", "B"):
        if side[s]["n_steps"] == 0:
            raise InvalidArgumentError(f"run {side[s]['run']!r} has logged no steps yet: nothing to compare")
    if side["common"]["n_steps"] == 0:
        raise InvalidArgumentError(
            f"runs {run_a!r} (steps {side['A']['first_step']}-{side['A']['last_step']}) and {run_b!r} "
            f"(steps {side['B']['first_step']}-{side['B']['last_step']}) share no step: nothing to compare"
        )
    if isinstance(layers, BaseException):
        raise layers
    drift = Beside(
        con, lambda cur: query("group_drift", con=cur, loss_name=loss_name, acc_name=acc_name, **pair)
    )
    by_step: dict[int, pl.DataFrame] = {}  # param_diff per step, read once
    verdict = _verdict(con, run_a, run_b, loss_name, _tensor_evidence(con, layers, pair, by_step), evidence)
    if verdict.check("rng").status == "latent":  # nothing logged after it differs: not where runs part
        layers = _latent_rng(layers)
    differing = layers.filter(pl.col("status") == "differs")
    compared = layers.filter(pl.col("n_compared") > 0)
    same_steps = side["A"]["n_steps"] == side["B"]["n_steps"] == side["common"]["n_steps"]
    identical = (
        differing.is_empty()
        and same_steps
        and not compared.is_empty()
        and layers.filter(~pl.col("status").is_in(IDENTICAL_STATUSES)).is_empty()
    )
    result = DiffResult(
        run_a=run_a, run_b=run_b, tol=float(tol), identical=identical, layers=layers, steps=steps
    )
    if not differing.is_empty():
        result.first_layer, result.first_step = differing["layer"][0], int(differing["first_step"][0])
    if verdict.first is not None:
        result.cause = asdict(verdict.first)
        result.cause["layer"] = LAYER_OF_CHECK.get(verdict.first.name)
    order = layers.filter((pl.col("layer") == "batch_order") & (pl.col("status") == "differs"))
    mismatch = query("batch_order_mismatch", con=con, **pair)
    if not mismatch.is_empty():
        result.batch_kinds = (
            mismatch.group_by("kind")
            .agg(pl.col("step").min().alias("first_step"), pl.len().alias("n_batches"))
            .sort("first_step")
        )
    if not order.is_empty():
        at = mismatch.filter((pl.col("step") == order["first_step"][0]) & (pl.col("kind") != "same")).head(1)
        result.batch = at.to_dicts()[0] if at.height else None
    pred = layers.filter((pl.col("layer") == "predictions") & (pl.col("status") == "differs"))
    if not pred.is_empty():  # once the order differs, position i holds unrelated samples: match by key
        at = int(pred["first_step"][0])
        by_key = not order.is_empty() and int(order["first_step"][0]) <= at
        result.samples = query(
            "prediction_diff", con=con, from_step=at, tol=float(tol), by_key=by_key, **pair
        )
    weights = layers.filter((pl.col("layer") == "weights") & (pl.col("status") == "differs"))
    if not weights.is_empty():
        step = int(weights["first_step"][0])
        result.params = by_step[step] if step in by_step else query("param_diff", con=con, step=step, **pair)
    result.resume, unread = resume_points(con, run_a, run_b, tol=float(tol))
    result.environment = query("env_diff", con=con, **pair)
    result.group_drift_steps = drift.result()
    result.group_drift = _group_summary(result.group_drift_steps)
    result.notes = _notes(layers, steps, run_a, run_b) + unread
    return result
