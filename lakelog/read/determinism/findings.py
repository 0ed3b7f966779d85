"""What check-determinism found: the checks in the guide's order, one verdict each, and the report's text.

Plain data and text only (no torch, no lake access), shared by the judging and the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CHECKS = {
    "environment": "environment (run.json)",
    "sample_ids": "sample ids / file order",
    "inputs": "input tensors (transforms)",
    "rng": "RNG states at batch start",
    "initial_weights": "initial weights",
    "outputs": "forward outputs",
    "loss": "loss",
    "gradients": "gradients",
    "update": "weights after the update",
}
INCOMPARABLE = (
    "the runs' fingerprints come from different algorithms (x3 on CPU, v1 on accelerators), so they are "
    "not compared; run the CPU one with LAKELOG_FINGERPRINT=v1"
)
"""Why fingerprints of two runs say nothing about equality: one sentence for every reader that compares them."""

NOT_LOGGED = {
    "sample_ids": "run.log_batch(sample_ids=..., inputs=..., rng=True)",
    "inputs": "run.log_batch(..., inputs=batch)",
    "rng": "run.log_batch(..., rng=True)",
    "initial_weights": "run.watch(model, optimizer) or lakelog.write.determinism.seeding.log_initial_state(run, model)",
    "outputs": "run.log_predictions(logits, ...)",
    "loss": "run.log({'loss': loss}, step=step)",
    "gradients": "run.watch(model, optimizer)",
    "update": "run.watch(model, optimizer)",
}


@dataclass
class Check:
    """One question asked of both runs; ``status``: same, differs (from ``step``), not logged, not compared
    (nothing comparable: e.g. no batch has the same ids), or latent (an RNG differs that training has not
    used so far: the runs are still identical)."""

    name: str
    title: str
    status: str
    step: int | None = None
    detail: str = ""
    cause: str = ""
    fix: str = ""
    compared: int = 0


@dataclass
class WorkerFlag:
    """A DataLoader worker seeding problem inside one run (it may be perfectly reproducible, and still wrong)."""

    run: str
    loader: str
    problem: str
    rng: str
    step: int | None
    workers: list[int]
    passes: list[int]
    message: str
    fix: str


@dataclass
class DeterminismReport:
    """What differs between two runs that should be identical, check by check, in the guide's order."""

    root: str
    run_a: str
    run_b: str
    checks: list[Check]
    worker_flags: list[WorkerFlag] = field(default_factory=list)
    first: Check | None = None

    @property
    def identical(self) -> bool:
        return all(c.status != "differs" for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["identical"] = self.identical
        return out

    def to_text(self) -> str:
        lines = [f"lakelog check-determinism: {self.run_a} vs {self.run_b} (in {self.root})", ""]
        if self.first is None:
            lines.append(
                "IDENTICAL: every logged check matches."
                + (" But see the DataLoader worker problems below." if self.worker_flags else "")
            )
            lines += [f"  note: {c.detail}; {c.fix}" for c in self.checks if c.status == "latent"]
        else:
            where = "before training" if self.first.step is None else f"at step {self.first.step}"
            lines += [
                f"FIRST DIFFERENCE: {self.first.title} {where}",
                f"  what:  {self.first.detail}",
                f"  cause: {self.first.cause}",
                "  fix:   " + self.first.fix.replace("\n", "\n         "),
            ]
        lines += ["", "Checks, in the order to read them:"]
        for c in self.checks:
            state = {"differs": "DIFFERS", "latent": "differs, unused"}.get(c.status, c.status)
            if c.status in ("differs", "latent"):
                state += " before training" if c.step is None else f" from step {c.step}"
            lines.append(
                f"  {c.title:<28} {state}"
                + (f"  ({c.detail})" if c.status != "same" and c is not self.first and c.detail else "")
            )
        if self.worker_flags:
            lines += [
                "",
                "DataLoader worker seeding problems (reproducible, but not random where it should be):",
            ]
            runs: dict[tuple[str, str], list[str]] = {}
            for flag in self.worker_flags:  # the same problem in both runs is shown once
                runs.setdefault((flag.message, flag.fix), []).append(flag.run)
            for (message, fix), names in runs.items():
                lines += [
                    f"  [{', '.join(names)}] {message}",
                    "      fix: " + fix.replace("\n", "\n           "),
                ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()
