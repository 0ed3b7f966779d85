"""altair charts of runs, fed by the query library (read side: no torch).

Every function takes a ``source`` first: a connection from ``lakelog.connect`` (reuse it for many
charts) or anything ``connect`` takes (a lake root, a run folder, a Run, a list of them), and
returns an altair chart. Data reach the chart only through ``queries/plot_*.sql``, which bucket
steps in DuckDB so a series never carries more than ``max_points`` points, however long the run.
A chart with nothing to draw raises ``NoDataError`` (a LakelogError) saying what was not logged.
In a notebook the charts render with no network: importing this package switches altair's default
renderer (which loads vega from a CDN) to ``lakelog-offline``, which inlines vega (``plots.notebook``).
"""

from __future__ import annotations

from lakelog.read.plots._common import NoDataError
from lakelog.read.plots.compare import Divergence, divergence, first_divergence
from lakelog.read.plots.curves import epoch_history, loss_curves, metric_curves
from lakelog.read.plots.health import (
    group_norms,
    holdout_accuracy,
    holdout_heatmap,
    label_balance,
    learning_rates,
)
from lakelog.read.plots.notebook import enable_offline
from lakelog.read.plots.sweep import (
    leaderboard,
    lower_is_better,
    parallel_coordinates,
    sweep_curves,
    training_time,
)

__all__ = [
    "Divergence",
    "NoDataError",
    "divergence",
    "enable_offline",
    "epoch_history",
    "first_divergence",
    "group_norms",
    "holdout_accuracy",
    "holdout_heatmap",
    "label_balance",
    "leaderboard",
    "learning_rates",
    "loss_curves",
    "lower_is_better",
    "metric_curves",
    "parallel_coordinates",
    "sweep_curves",
    "training_time",
]
