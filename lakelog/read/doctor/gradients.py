"""Gradient checks: vanishing or exploding per group and per layer, dead layers, frozen tensors.

A group's total gradient norm is dominated by its largest tensors, so it hides early layers that
vanish (a deep sigmoid MLP in the optimizer's single default group) and a weight whose gradient
is exactly zero beside a bias that still gets one. These checks therefore also judge tensors one
by one, in model order (``watch`` records it in run.json), and name them.
"""

from __future__ import annotations

import polars as pl

from lakelog.read.doctor.base import Context, Verdict, fmt, name_list


def _ordered(ctx: Context, df: pl.DataFrame) -> pl.DataFrame:
    """The per-tensor rows in model order when run.json has it, else by name."""
    order = ctx.watch.get("tensors") or []
    if df.is_empty():
        return df
    if not order:
        return df.sort("name")
    rank = {name: i for i, name in enumerate(order)}
    return (
        df.with_columns(
            pl.col("name").replace_strict(rank, default=len(rank), return_dtype=pl.Int64).alias("order")
        )
        .sort("order", "name")
        .drop("order")
    )


def _early_late(ctx: Context, tensors: pl.DataFrame) -> list[tuple[str, dict, dict, float, str]]:
    """Per group with at least 4 weight matrices: (group, earliest, latest, ratio, first tensor below)."""
    out = []
    weights = tensors.filter((pl.col("ndim") >= 2) & (pl.col("median_grad_rms") > 0))
    for group in weights["group"].unique(maintain_order=True).to_list():
        rows = weights.filter(pl.col("group") == group).to_dicts()
        if len(rows) < 4:
            continue
        quarter = max(1, len(rows) // 4)
        early = sorted(r["median_grad_rms"] for r in rows[:quarter])[(quarter - 1) // 2]
        late = sorted(r["median_grad_rms"] for r in rows[-quarter:])[(quarter - 1) // 2]
        ratio = early / late
        if ratio < ctx.expect["vanish_ratio"]:
            below = next(
                (
                    r["name"]
                    for r in reversed(rows[:-1])
                    if r["median_grad_rms"] / late < ctx.expect["vanish_ratio"]
                ),
                rows[0]["name"],
            )
            out.append((group, rows[0], rows[-1], ratio, below))
    return out


def gradients(ctx: Context) -> Verdict:
    df = ctx.query("grad_health")
    if df.is_empty():
        return Verdict("skip", "no gradient norms logged (run.watch(model, optimizer) captures them)", df)
    parts, status = [], "pass"
    for r in df.filter(pl.col("status") != "ok").to_dicts():
        if r["status"] == "exploding":
            status = "error"
            parts.append(
                f"{r['group']} exploding from step {r['first_exploding_step']} (max {fmt(r['max_norm'])})"
            )
        else:
            status = max(status, "warn", key=("pass", "warn", "error").index)
            parts.append(f"{r['group']} vanishing (median {fmt(r['median_norm'])})")
    tensors = _ordered(ctx, ctx.cached("grad_tensors"))
    layered = _early_late(ctx, tensors) if ctx.watch.get("tensors") else []
    for group, first, last, ratio, below in layered:
        status = max(status, "warn", key=("pass", "warn", "error").index)
        parts.append(
            f"{group}: early layers vanish: its first weights (from {first['name']}, gradient RMS "
            f"{fmt(first['median_grad_rms'])}) get {fmt(ratio)}x the gradient of its last (to {last['name']}, "
            f"{fmt(last['median_grad_rms'])}); under {fmt(ctx.expect['vanish_ratio'])}x up to {below}"
        )
    if parts:
        evidence = tensors if layered and status == "warn" else df
        return Verdict(
            status, "; ".join(parts), evidence, "grad_tensors" if evidence is tensors else "grad_health"
        )
    medians = ", ".join(f"{r['group']} {fmt(r['median_norm'])}" for r in df.to_dicts())
    bounds = f"[{fmt(ctx.expect['vanish'])}, {fmt(ctx.expect['explode'])}]"
    return Verdict("pass", f"median gradient norm per group within {bounds}: {medians}", df, "grad_health")


def dead_layers(ctx: Context) -> Verdict:
    df = _ordered(ctx, ctx.cached("grad_tensors"))
    df = df.filter(pl.col("n_with_grad") > 0)
    if df.is_empty():
        return Verdict(
            "skip", "no gradients logged (run.watch(model, optimizer) captures them)", df, "grad_tensors"
        )
    zero = df.filter((pl.col("n_window") >= 2) & (pl.col("n_window_zero") == pl.col("n_window")))
    if zero.is_empty():
        n = df.height
        return Verdict(
            "pass", f"every one of {n} tensor(s) with gradients got a non-zero one", df, "grad_tensors"
        )
    module = pl.col("name").str.replace(r"\.[^.]*$", "")
    alive = set(df.filter(pl.col("n_window_zero") < pl.col("n_window")).select(module)["name"].to_list())
    rows = zero.with_columns(module.alias("module")).to_dicts()
    beside = [
        r for r in rows if r["module"] in alive and r["ndim"] >= 2
    ]  # a bias still learns: its input is 0
    died = [r for r in rows if r not in beside and r["n_nonzero"] > 0]  # had gradients, then none
    never = [r for r in rows if r not in beside and r["n_nonzero"] == 0]
    parts = []
    if beside:
        parts.append(
            f"{len(beside)} weight(s) get an exactly zero gradient while their module's other tensors do not "
            f"(their input is all zero: a dead layer before them): {name_list([r['name'] for r in beside])}"
        )
    if died:
        steps = ", ".join(f"{r['name']} after step {r['last_grad_step']}" for r in died[:5])
        parts.append(f"{len(died)} tensor(s) stopped getting any gradient (dead units): {steps}")
    evidence = zero
    if parts:
        return Verdict("warn", "; ".join(parts), evidence, "grad_tensors")
    names = name_list([r["name"] for r in never])
    return Verdict(
        "note",
        f"{len(never)} tensor(s) have a zero gradient on every capture (unused in forward?): {names}",
        evidence,
        "grad_tensors",
    )


def frozen_layers(ctx: Context) -> Verdict:
    df = _ordered(ctx, ctx.query("frozen_layers"))  # names listed in model order
    off: dict[str, str | None] = ctx.watch.get("requires_grad_off") or {}
    outside = set(ctx.watch.get("not_in_optimizer") or [])
    parts: list[str] = []
    status = "pass"
    frozen = df.filter(pl.col("status").is_in(["frozen", "partly frozen"])) if not df.is_empty() else df
    rounding: list[str] = []
    if not frozen.is_empty():
        matrix = pl.col("shape").fill_null("[]").str.count_matches(",") >= 1
        # moved on some captures: in the optimizer and stepped, so its zero updates are rounding
        rounding = frozen.filter((pl.col("status") == "partly frozen") | (pl.col("too_small") & ~matrix))[
            "name"
        ]
        rounding = rounding.to_list()
        small = frozen.filter((pl.col("status") == "frozen") & pl.col("too_small") & matrix)
        stuck = frozen.filter((pl.col("status") == "frozen") & ~pl.col("too_small"))
        if not small.is_empty():
            status = "warn"
            parts.append(
                f"{small.height} weight(s) get gradients too small to change them (a vanishing gradient, see "
                f"'gradients'; from step {small['first_frozen_step'].min()}): "
                + name_list(small["name"].to_list())
            )
        if not stuck.is_empty():
            status = "warn"
            names = stuck["name"].to_list()
            left_out = [n for n in names if n in outside]
            if left_out:
                parts.append(
                    f"{len(left_out)} tensor(s) get gradients but are in no optimizer param group: "
                    + name_list(left_out)
                )
            other = [n for n in names if n not in outside]
            if other:
                first = stuck.filter(pl.col("name").is_in(other))["first_frozen_step"].min()
                parts.append(
                    f"{len(other)} tensor(s) got gradients but never moved (first at step {first}): "
                    f"{name_list(other)}; "
                    + (
                        "are they in the optimizer, with a non-zero LR?"
                        if not outside
                        else "is their group stepped?"
                    )
                )
    tensors = ctx.cached("grad_tensors")
    unfrozen = (
        set(tensors.filter(pl.col("n_with_grad") > 0)["name"].to_list()) if not tensors.is_empty() else set()
    )
    off = {n: g for n, g in off.items() if n not in unfrozen}  # requires_grad turned on after watch()
    captures = dict(zip(tensors["name"], tensors["n_steps"], strict=True)) if not tensors.is_empty() else {}
    trained_off = _in_optimizer_with_lr(ctx, off)
    unsure = [t for t in trained_off if captures.get(t[0], 0) < 2]  # one capture: unfrozen later, unseen?
    trained_off = [t for t in trained_off if t not in unsure]
    if trained_off:
        status = "warn"
        groups = ", ".join(sorted({f"{g} (lr {fmt(lr)})" for _, g, lr in trained_off}))
        parts.append(
            f"{len(trained_off)} tensor(s) have requires_grad=False but sit in optimizer group(s) {groups}: they "
            f"never train; set requires_grad=True or leave them out: {name_list([n for n, _, _ in trained_off])}"
        )
    if parts:
        return Verdict(status, "; ".join(parts), df, "frozen_layers")
    notes = []
    if rounding:
        notes.append(
            f"{len(rounding)} tensor(s) get gradients so small that their update rounds away on some steps "
            f"(e.g. a bias right before a normalization layer): {name_list(rounding)}"
        )
    if unsure:
        notes.append(
            f"{len(unsure)} tensor(s) have requires_grad=False but sit in an optimizer group with a non-zero LR "
            f"(unless unfrozen after the first capture, they never train): {name_list([n for n, _, _ in unsure])}"
        )
        off = {n: g for n, g in off.items() if n not in {u[0] for u in unsure}}
    if off:
        notes.append(
            f"{len(off)} tensor(s) frozen with requires_grad=False (left out of the optimizer): {name_list(list(off))}"
        )
    lr0 = df.filter(pl.col("status") == "lr 0") if not df.is_empty() else df
    if not lr0.is_empty():
        notes.append(
            f"{lr0.height} tensor(s) have LR 0 on every captured step: {name_list(lr0['name'].to_list())}"
        )
    still = df.filter(pl.col("status") == "no gradient") if not df.is_empty() else df
    unexplained = [n for n in still["name"].to_list() if n not in off] if not still.is_empty() else []
    if unexplained:
        notes.append(
            f"{len(unexplained)} tensor(s) get no gradient at all (unused?): {name_list(unexplained)}"
        )
    if notes:
        return Verdict("note", "; ".join(notes), df, "frozen_layers")
    if df.is_empty():
        return Verdict(
            "skip",
            "no update norms logged (run.watch captures them from the second capture on)",
            df,
            "frozen_layers",
        )
    return Verdict("pass", "every tensor with a gradient was updated", df, "frozen_layers")


def _in_optimizer_with_lr(ctx: Context, off: dict[str, str | None]) -> list[tuple[str, str, float]]:
    """requires_grad=False tensors whose optimizer group has a non-zero LR: (name, group, max LR)."""
    groups = sorted({g for g in off.values() if g})
    if not groups:
        return []
    rows = ctx.con.execute(
        "SELECT substr(name, 4) AS grp, max(value) FROM scalars WHERE run = $run AND name IN "
        "(SELECT 'lr/' || unnest($groups::VARCHAR[])) GROUP BY grp",
        {"run": ctx.run, "groups": groups},
    ).fetchall()
    lr = {g: v for g, v in rows}
    return [(n, g, lr[g]) for n, g in off.items() if g and lr.get(g)]
