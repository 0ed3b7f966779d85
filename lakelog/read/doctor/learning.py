"""Is the model learning, and does it generalise? The curves come from the ``overfitting`` query.

Metric names: users log accuracy as ``acc``, ``val_acc``, ``val/accuracy``, ``eval_accuracy``…
Unless a name is given (``acc_name``, ``holdout_name``, ``loss_name``; on the command line
``--train-metric``, ``--metric``, ``--loss-metric``), the first logged name among the common ones
is used (case-insensitive), and a skip says which names were looked for and how to name another.
"""

from __future__ import annotations

import polars as pl

from lakelog.read.doctor.base import Context, Verdict, fmt, name_list
from lakelog.read.doctor.expect import AUTO

TRAIN_NAMES = (
    "acc", "accuracy", "train/acc", "train_acc", "train/accuracy", "train_accuracy", "train-acc",
    "train_acc_step", "train_acc_epoch", "training/accuracy", "metrics/acc",
)  # fmt: skip
HOLDOUT_NAMES = (
    "holdout/acc", "val_acc", "val/acc", "val_accuracy", "val/accuracy", "valid_acc", "valid/acc",
    "valid_accuracy", "validation_acc", "validation/acc", "validation_accuracy", "validation/accuracy",
    "eval_acc", "eval/acc", "eval_accuracy", "eval/accuracy", "test_acc", "test/acc", "test_accuracy",
    "test/accuracy", "val_acc_epoch", "holdout_acc",
)  # fmt: skip
LOSS_NAMES = ("loss", "train/loss", "train_loss", "training_loss", "train_loss_step", "train_loss_epoch")
OPTIONS = {"acc_name": "--train-metric", "holdout_name": "--metric", "loss_name": "--loss-metric"}
"""Each metric expectation and the ``lakelog doctor`` option that sets it."""


def resolve(ctx: Context, key: str, candidates: tuple[str, ...]) -> str:
    """The scalar to read for ``key``: the given name, else the first common name logged, else the first."""
    given = ctx.expect[key]
    if given != AUTO:
        return given
    logged = {n.lower(): n for n in ctx.scalar_names}
    return next((logged[c] for c in candidates if c in logged), candidates[0])


def how_to_name(key: str, looked: tuple[str, ...] | None = None) -> str:
    where = f"looked for {name_list(list(looked), 6)}; " if looked else ""
    return f"{where}name yours with {OPTIONS[key]} NAME (doctor(..., {key}='NAME'))"


def _curves(ctx: Context) -> tuple[pl.DataFrame, dict[str, str]]:
    chosen = {
        "acc_name": resolve(ctx, "acc_name", TRAIN_NAMES),
        "holdout_name": resolve(ctx, "holdout_name", HOLDOUT_NAMES),
        "loss_name": resolve(ctx, "loss_name", LOSS_NAMES),
    }
    if "curves" not in ctx.cache:
        ctx.cache["curves"] = ctx.query("overfitting", **chosen)
    return ctx.cache["curves"], chosen


def overfitting(ctx: Context) -> Verdict:
    df, chosen = _curves(ctx)
    if df.is_empty() or df["status"][0] == "no train":
        looked = None if ctx.expect["acc_name"] != AUTO else TRAIN_NAMES
        return Verdict(
            "skip",
            f"no training accuracy logged (nor predictions with labels); {how_to_name('acc_name', looked)}",
            df,
            "overfitting",
        )
    r = df.row(0, named=True)
    if r["status"] == "no holdout":
        looked = None if ctx.expect["holdout_name"] != AUTO else HOLDOUT_NAMES
        return Verdict(
            "skip",
            "no holdout accuracy logged (run.watch(..., holdout=...) or a scalar); "
            + how_to_name("holdout_name", looked),
            df,
            "overfitting",
        )
    trend = (
        f"train accuracy ({chosen['acc_name']}) {fmt(r['train_start'])} -> {fmt(r['train_end'])}, holdout "
        f"({chosen['holdout_name']}) {fmt(r['holdout_end'])} (chance {fmt(r['chance'])})"
    )
    if r["status"] == "overfitting":
        return Verdict("warn", f"memorising: {trend}: the holdout stays near chance", df, "overfitting")
    if r["status"] == "gap":
        return Verdict("warn", f"generalisation gap {fmt(r['gap'])}: {trend}", df, "overfitting")
    return Verdict("pass", trend, df, "overfitting")


def _ends(values: pl.Series) -> tuple[float | None, float | None]:
    """Mean of the first and of the last fifth of a series (None when empty)."""
    values = values.drop_nulls()
    if values.is_empty():
        return None, None
    k = max(1, values.len() // 5)
    return float(values.head(k).mean()), float(values.tail(k).mean())  # type: ignore[arg-type]


def not_learning(ctx: Context) -> Verdict:
    """Loss not decreasing and accuracy at chance once the warm-up is over (the first ``warmup``
    fraction of the steps, and any LR warmup: until every group's LR first reaches its peak).

    The training accuracy decides when it is logged (a model that memorises is learning); the
    holdout accuracy only when it is the one logged. Chance on the training data is the larger of
    1 / classes and the most common label's share (always guessing it scores that much).
    """
    df, chosen = _curves(ctx)
    if df.is_empty() or (df["loss"].null_count() == df.height and df["train_acc"].null_count() == df.height):
        return Verdict(
            "skip",
            "no training loss or accuracy logged; " + how_to_name("loss_name", LOSS_NAMES),
            df,
            "overfitting",
        )
    start = max(int(df["step"].quantile(ctx.expect["warmup"], "nearest")), _lr_peak_step(ctx))  # type: ignore[arg-type]
    judged = df.filter(pl.col("step") >= start)
    n = judged["step"].n_unique()
    if n < 10:
        return Verdict("pass", f"too short to judge: {n} step(s) after the warm-up", df, "overfitting")
    loss0, loss1 = _ends(judged["loss"])
    flat = None if loss0 is None or loss1 is None else (loss0 - loss1) < ctx.expect["min_drop"] * abs(loss0)
    column, label = ("train_acc", chosen["acc_name"])
    chance = max(float(df["chance"][0]), float(df["majority"][0] or 0))
    if judged[column].null_count() == judged.height:
        column, label, chance = "holdout_acc", chosen["holdout_name"], float(df["chance"][0])
    acc0, acc1 = _ends(judged[column])
    at_chance = acc1 is not None and acc1 - chance <= min(ctx.expect["margin"], chance)  # 1000 classes: 0.001
    if flat is None and acc0 is not None and acc1 is not None:
        flat = acc1 - acc0 < ctx.expect["min_rise"]
    loss = "" if loss0 is None else f"loss ({chosen['loss_name']}) {fmt(loss0)} -> {fmt(loss1)}"
    if at_chance and flat:
        text = f"not learning after step {start}: {loss + ', ' if loss else ''}{label} {fmt(acc1)} at chance ({fmt(chance)})"
        return Verdict("warn", text, judged, "overfitting")
    acc = "" if acc1 is None else f"{label} {fmt(acc1)} (chance {fmt(chance)})"
    return Verdict(
        "pass", f"after step {start}: " + "; ".join(t for t in (loss, acc) if t), judged, "overfitting"
    )


def _lr_peak_step(ctx: Context) -> int:
    """The first step at which every group's LR has reached its peak (the end of an LR warmup), or 0."""
    rows = ctx.con.execute(
        "WITH lr AS (SELECT name, step, value, max(value) OVER (PARTITION BY name) AS peak FROM scalars "
        "WHERE run = $run AND starts_with(name, 'lr/')) "
        "SELECT max(first) FROM (SELECT name, min(step) AS first FROM lr WHERE value >= peak GROUP BY name)",
        {"run": ctx.run},
    ).fetchall()
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0
