"""A watch capture carries the step of the batch it belongs to, whatever the loop's order.

The same training is written the two ways users write it: logging a batch before ``optimizer.step()``
and logging it after. Both must stamp the params rows with the batch's step, never two captures at one
step, and ``diff`` of a run with one input changed at step 12 must name the inputs layer at step 12 first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lakelog
from lakelog.read.diff import diff_runs

STEPS = 20
CHANGED = 12


def train(
    root: Path,
    name: str,
    *,
    order: str,
    change_at: int | None = None,
    every: int = 1,
    accumulate: int = 1,
    step_fn=None,
    log_every: int = 1,
) -> None:
    """A tiny seeded MLP; ``order`` is "before" (log, then step) or "after" (step, then log)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x_all = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    y_all = (x_all[:, 0] > 0).long()
    options = {"every": every} if step_fn is None else {"every": every, "step": step_fn}
    with lakelog.init(root, name=name) as run:
        run.watch(model, opt, **options)
        for step in range(STEPS):
            for micro in range(accumulate):
                idx = torch.arange(8) + 8 * ((step * accumulate + micro) % 8)
                x, y = x_all[idx].clone(), y_all[idx]
                if change_at == step and micro == 0:
                    x[3] = -x[3]
                out = model(x)
                loss = F.cross_entropy(out, y) / accumulate
                loss.backward()
                logged = order == "before" or micro < accumulate - 1
                if logged and step % log_every == 0:
                    _log(run, step, micro, idx, x, out, loss)
            opt.step()
            opt.zero_grad()
            if order == "after" and step % log_every == 0:
                _log(run, step, accumulate - 1, idx, x, out, loss)


def _log(run, step, micro, idx, x, out, loss) -> None:
    run.log_batch(step=step, sample_ids=idx.tolist(), inputs=x, batch_idx=micro)
    run.log_predictions(out.detach(), step=step, batch_idx=micro)
    run.log({"loss": loss.detach()}, step=step)


def steps_of(root: Path, name: str, n_params: int = 4) -> list[int]:
    """The steps of a run's weight captures; two captures at one step would double a step's count."""
    con = lakelog.connect(root)
    rows = con.execute(
        "SELECT step, count(*) AS n FROM params WHERE run = ? AND kind = 'param' GROUP BY step ORDER BY step",
        [name],
    ).fetchall()
    assert all(n == n_params for _, n in rows), rows
    return [s for s, _ in rows]


@pytest.mark.parametrize("order", ["before", "after"])
def test_every_capture_carries_its_batchs_step(tmp_path: Path, order: str) -> None:
    train(tmp_path, "a", order=order)
    assert steps_of(tmp_path, "a") == list(range(STEPS))
    train(tmp_path, "sparse", order=order, every=5)
    assert steps_of(tmp_path, "sparse") == [0, 5, 10, 15]


@pytest.mark.parametrize("order", ["before", "after"])
def test_an_input_changed_at_step_12_is_found_at_step_12_in_either_order(tmp_path: Path, order: str) -> None:
    train(tmp_path, "a", order=order)
    train(tmp_path, "b", order=order, change_at=CHANGED)
    r = diff_runs(tmp_path, "a", "b")
    assert (r.first_layer, r.first_step) == ("inputs", CHANGED)
    differing = r.layers.filter(r.layers["status"] == "differs")
    # the changed sample moves its logits, the loss, the gradients and the update of that same step
    assert dict(zip(differing["layer"], differing["first_step"], strict=True)) == {
        "inputs": CHANGED,
        "predictions": CHANGED,
        "loss": CHANGED,
        "gradients": CHANGED,
        "weights": CHANGED,
        "optimizer": CHANGED,
    }
    assert "2.bias, 2.bias" not in (r.layer("gradients")["detail"] or "")


def test_both_orders_give_the_same_answer(tmp_path: Path) -> None:
    answers = []
    for order in ("before", "after"):
        root = tmp_path / order
        train(root, "a", order=order)
        train(root, "b", order=order, change_at=CHANGED)
        r = diff_runs(root, "a", "b")
        answers.append(r.layers.select("layer", "status", "first_step").rows())
    assert answers[0] == answers[1]


@pytest.mark.parametrize("order", ["before", "after"])
def test_gradient_accumulation_stamps_one_capture_per_optimizer_step(tmp_path: Path, order: str) -> None:
    train(tmp_path, "acc", order=order, accumulate=4)
    assert steps_of(tmp_path, "acc") == list(range(STEPS))


@pytest.mark.parametrize("order", ["before", "after"])
def test_logging_every_few_steps_still_numbers_each_capture(tmp_path: Path, order: str) -> None:
    train(tmp_path, "few", order=order, log_every=5)
    assert steps_of(tmp_path, "few") == list(range(STEPS))


def test_a_step_callable_sets_the_step_in_either_order(tmp_path: Path) -> None:
    for order in ("before", "after"):
        state = {"global_step": 0}

        def step_fn(state=state) -> int:
            return 100 + state["global_step"]

        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with lakelog.init(tmp_path, name=order) as run:
            run.watch(model, opt, every=2, step=step_fn)
            for step in range(6):
                if order == "before":
                    run.log({"x": 1.0}, step=step)
                model(torch.ones(1, 4)).sum().backward()
                opt.step()
                state["global_step"] += 1
                if order == "after":
                    run.log({"x": 1.0}, step=step)
        con = lakelog.connect(tmp_path)
        got = con.execute(
            "SELECT DISTINCT step FROM params WHERE run = ? AND kind = 'param' ORDER BY step", [order]
        ).fetchall()
        assert [s for (s,) in got] == [100, 102, 104]


def test_a_log_call_before_the_loop_does_not_shift_an_after_loop(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with lakelog.init(tmp_path, name="pre") as run:
        run.watch(model, opt, every=1)
        run.log({"lr": 0.1}, step=0)  # a setup log between watch and the loop
        for step in range(8):
            model(torch.ones(1, 4) * step).sum().backward()
            opt.step()
            opt.zero_grad()
            run.log({"loss": 1.0}, step=step)
    assert steps_of(tmp_path, "pre", n_params=2) == list(range(8))


def test_sparse_logging_gives_the_range_the_cause_lies_in(tmp_path: Path) -> None:
    for name, change in (("a", None), ("b", CHANGED)):
        train(tmp_path, name, order="before", change_at=change, every=5, log_every=5)
    r = diff_runs(tmp_path, "a", "b")
    # the changed batch (step 12) was not logged: the first logged step that differs is 15
    assert (r.first_layer, r.first_step) == ("predictions", 15) and r.layer("inputs")["status"] == "same"
    for layer in ("predictions", "loss", "gradients", "weights"):
        row = r.layer(layer)
        assert (row["first_step"], row["last_equal_step"], row["placed"]) == (15, 10, False), row
        assert row["detail"].endswith("; between step 11 and 15 (last equal logged step 10)"), row["detail"]
    [note] = [n for n in r.notes if "sparsely" in n]
    assert note.startswith(
        "logged too sparsely to place where they part: predictions (between step 11 and 15)"
    )


def test_dense_logging_places_the_cause_at_its_step(tmp_path: Path) -> None:
    train(tmp_path, "a", order="before")
    train(tmp_path, "b", order="before", change_at=CHANGED, every=5)  # weights sparse, batches dense
    r = diff_runs(tmp_path, "a", "b")
    assert (r.first_layer, r.first_step) == ("inputs", CHANGED)
    assert r.layer("inputs")["placed"] and r.layer("inputs")["last_equal_step"] == CHANGED - 1
    assert not r.layer("weights")["placed"] and r.layer("weights")["first_step"] == 15
    [note] = [n for n in r.notes if "sparsely" in n]
    assert "weights (between step 11 and 15)" in note and note.endswith(
        "placed at their step: inputs, predictions, loss"
    )


def test_param_digests_find_the_same_first_capture_as_the_tensors(tmp_path: Path) -> None:
    train(tmp_path, "a", order="after")
    train(tmp_path, "b", order="after", change_at=CHANGED)
    con = lakelog.connect(tmp_path)
    captures = con.execute(
        "SELECT run, capture, count(*) FROM param_digests GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert captures == [("a", "initial", 1), ("a", "step", STEPS), ("b", "initial", 1), ("b", "step", STEPS)]
    with_digests = lakelog.query("first_divergence", con=con, run_a="a", run_b="b")
    for run in ("a", "b"):
        shutil.rmtree(tmp_path / run / "param_digests")  # a lake written before the digests existed
    tensor_by_tensor = lakelog.query("first_divergence", con=lakelog.connect(tmp_path), run_a="a", run_b="b")
    assert with_digests.equals(tensor_by_tensor)
    assert with_digests.filter(with_digests["layer"] == "weights")["first_step"].to_list() == [CHANGED]


def test_a_resumed_process_captures_no_initial_state_either_way(tmp_path: Path) -> None:
    from lakelog.write.determinism import log_initial_state

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for mode in ("error", "resume"):
        with lakelog.init(tmp_path, name="r", mode=mode) as run:
            log_initial_state(run, model)
            run.watch(model, opt, every=1)
            for step in range(3) if mode == "error" else range(3, 6):
                run.log_batch(step=step, sample_ids=[step])
                model(torch.ones(1, 4)).sum().backward()
                opt.step()
    con = lakelog.connect(tmp_path)
    rows = con.execute(
        "SELECT kind, list(step ORDER BY step) FROM params GROUP BY kind ORDER BY kind"
    ).fetchall()
    steps = dict(rows)
    assert steps["initial:param"] == [0, 0, 0, 0]  # weight and bias, once by log_initial_state, once by watch
    assert steps["resume:param"] == [2, 2]  # the state the resumed process starts from: after step 2
    assert sorted(set(steps["param"])) == list(range(6))
