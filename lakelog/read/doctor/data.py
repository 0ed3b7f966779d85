"""Checks on the data and the schedule: label balance, updates per epoch, LR ratios, the first NaN/Inf."""

from __future__ import annotations

import polars as pl

from lakelog.read.doctor.base import Context, Verdict, fmt

_ORIGIN = {
    "predictions": "the forward pass (the weights going in were finite: look at this batch's inputs and activations)",
    "scalars": "a logged scalar",
    "gradients": "the backward pass (the logits and loss before it were finite as logged)",
    "weights": "the optimizer step (the update made them non-finite)",
    "buffers": "a buffer (e.g. BatchNorm running statistics)",
    "optimizer": "the optimizer state (e.g. Adam's squared gradients overflowing float32)",
}


def label_balance(ctx: Context) -> Verdict:
    df = ctx.query("label_balance")
    if df.is_empty():
        return Verdict("skip", "no labels logged (log_predictions(..., labels=...))", df, "label_balance")
    shares = ", ".join(f"class {r['class']} {100 * (r['share'] or 0):.0f}%" for r in df.to_dicts())
    ratio = df["imbalance"][0]
    if df["status"][0] == "imbalanced":
        text = f"imbalanced training labels ({fmt(ratio)}x between most and least common): {shares}"
        return Verdict("warn", text, df, "label_balance")
    limit = fmt(ctx.expect["max_ratio"])
    text = f"balanced enough ({fmt(ratio)}x; no class under 1/{limit} of its fair share): {shares}"
    return Verdict("pass", text, df, "label_balance")


def nan_inf(ctx: Context) -> Verdict:
    df = ctx.query("nan_inf")
    if df.is_empty():
        return Verdict(
            "pass",
            "no NaN or Inf in the logged logits, losses, scalars, gradients, weights, buffers or optimizer state",
            df,
            "nan_inf",
        )
    real = df.filter(pl.col("source") != "derived norms")
    if real.is_empty():
        r = df.row(0, named=True)
        return Verdict(
            "note",
            f"no NaN or Inf in any logged value; only norms overflow, from step {r['step']} ({r['name']}: "
            f"{r['detail']}): the values are finite but large (see 'gradients')",
            df,
            "nan_inf",
        )
    r = real.row(0, named=True)
    origin = _ORIGIN.get(r["source"], r["source"])
    text = f"first NaN/Inf at step {r['step']} in {r['source']}: {r['name']} ({r['detail']}): from {origin}"
    return Verdict("error", text, df, "nan_inf")


def updates_per_epoch(ctx: Context) -> Verdict:
    df = ctx.query("updates_per_epoch")
    if df.is_empty():
        return Verdict("skip", "no steps logged", df, "updates_per_epoch")
    complete = df.filter(pl.col("complete"))
    if complete.is_empty():
        r = df.row(0, named=True)
        return Verdict(
            "pass",
            f"{r['batches_per_epoch']} batch(es) so far in the only epoch, which may be unfinished: judged once "
            "the run finishes or a second epoch starts",
            df,
            "updates_per_epoch",
        )
    r = complete.sort("batches_per_epoch").row(0, named=True)
    size = "" if r["batch_size"] is None else f" of {fmt(r['batch_size'])} samples"
    seen = f"{r['batches_per_epoch']} batches{size} per epoch"
    lo, hi = ctx.expect["min_batches"], ctx.expect["max_batches"]
    if r["status"] == "too few":
        suggested = r["suggested_batch_size"]
        text = (
            f"only {seen} ({fmt(r['samples_per_epoch'])} samples; {r['total_updates']} updates in all): "
            f"{lo}-{hi} batches per epoch is the sweet spot for enough gradient updates; batch size "
            f"~{suggested} would give ~{round(r['samples_per_epoch'] / suggested)}"
        )
        return Verdict("warn", text, df, "updates_per_epoch")
    if r["status"] == "few":
        why = (
            "the sample count is unknown (log_batch or log_predictions per batch records it)"
            if r["batch_size"] is None
            else f"fine for {fmt(r['samples_per_epoch'])} samples and {r['total_updates']} updates in all"
        )
        return Verdict("note", f"{seen}, fewer than the usual {lo}-{hi}: {why}", df, "updates_per_epoch")
    return Verdict("pass", seen, df, "updates_per_epoch")


def lr_ratio(ctx: Context) -> Verdict:
    groups = _lr_groups(ctx)
    if len(groups) < (1 if ctx.lr_ratio else 2):
        found = f" (found: {', '.join(groups)})" if groups else ""
        return Verdict(
            "skip",
            f"fewer than two lr/<group> scalars logged{found} (run.watch logs them per optimizer group)",
            pl.DataFrame(),
            "lr_ratio",
        )
    pairs = ctx.lr_ratio or [(g, groups[0], -1.0) for g in groups[1:]]
    frames = [
        ctx.query("lr_ratio", numerator=num, denominator=den, expected=ratio, rtol=ctx.expect["rtol"])
        for num, den, ratio in pairs
    ]
    df = pl.concat(frames, how="diagonal_relaxed")
    rows = df.to_dicts()
    if ctx.lr_ratio is None:
        seen = ", ".join(f"{r['pair']} = {_ratio_text(r)}" for r in rows)
        return Verdict(
            "skip",
            f"no expected ratio given (e.g. lr_ratio='head/backbone=10'); observed {seen}",
            df,
            "lr_ratio",
        )
    parts, bad = [], False
    for r in rows:
        if r["status"] == "ok":
            parts.append(f"{r['pair']} = {fmt(r['expected'])} as expected{_zero_note(r)}")
        elif r["status"] == "missing group":
            bad = True
            missing = [g for g in (r["numerator"], r["denominator"]) if g not in groups]
            parts.append(
                f"{r['pair']}: no group {', '.join(repr(g) for g in missing)}; the groups logged are {', '.join(groups)}"
            )
        elif r["status"] == "no overlap":
            parts.append(f"{r['pair']}: never both non-zero at one step")
        else:
            bad = True
            parts.append(
                f"{r['pair']} is {fmt(r['first_ratio'])} at first, {fmt(r['last_ratio'])} at the end, expected "
                f"{fmt(r['expected'])} (first off at step {r['first_off_step']}: {fmt(r['first_off_ratio'])})"
            )
    return Verdict("warn" if bad else "pass", "; ".join(parts), df, "lr_ratio")


def _ratio_text(r: dict) -> str:
    if r["status"] != "observed":
        return r["status"]
    if r["min_ratio"] is not None and r["max_ratio"] is not None and r["min_ratio"] != r["max_ratio"]:
        return f"{fmt(r['first_ratio'])} -> {fmt(r['last_ratio'])}"
    return fmt(r["last_ratio"])


def _zero_note(r: dict) -> str:
    return (
        f" (over {r['n_steps']} steps; {r['zero_steps']} with an LR of 0 left out)" if r["zero_steps"] else ""
    )


def _lr_groups(ctx: Context) -> list[str]:
    names = [n.removeprefix("lr/") for n in ctx.scalar_names if n.startswith("lr/")]
    return sorted(names)
