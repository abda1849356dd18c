"""Statistics over runs that differ only in their seed, and which way a metric is better. `llmkit compare`
shows a seed group as one row from these; the seeds feature writes `summarize_seeds` to seeds.json.

    seed_summary([0.8, 0.9, 1.0])   # {"mean": 0.9, "std": 0.1, "ci95": [0.6516, 1.1484], ..., "n": 3}
    summarize_seeds([Path("runs/x/seed-1"), Path("runs/x/seed-2")])   # {"accuracy": {...}, "loss": {...}}
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from llmkit.runlog import read_json

RESULTS = "eval_results.json"
LOWER_IS_BETTER_ENDINGS = ("loss", "mse", "mae", "perplexity")


def seed_summary(values: list[float]) -> dict:
    """Mean, sample standard deviation (ddof=1) and the 95% confidence interval of the mean (Student t, since a
    handful of seeds is far from the normal limit), min, max and n. One value has std 0 and ci95 [v, v]."""
    from scipy.stats import t

    n, mean = len(values), statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    half_width = t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else 0.0
    # float(): scipy gives numpy scalars, which print as np.float64(...) in reprs
    return {"mean": mean, "std": std, "ci95": [float(mean - half_width), float(mean + half_width)],
            "min": min(values), "max": max(values), "n": n}


def summarize_seeds(run_dirs: list[Path]) -> dict[str, dict]:
    """{metric: seed_summary} over the scalar metrics of each run's eval_results.json; a run without one (not
    finished) is left out, so a metric's n counts the runs that have it."""
    values: dict[str, list[float]] = {}
    for run_dir in run_dirs:
        for name, value in scalar_results(Path(run_dir)).items():
            values.setdefault(name, []).append(value)
    return {name: seed_summary(found) for name, found in values.items()}


def scalar_results(run_dir: Path) -> dict[str, float]:
    """The final evaluation's metrics: the float values of eval_results.json (counts such as num_examples are
    ints, and per-class tables are dicts); none when the run wrote no results."""
    results = read_json(run_dir / RESULTS)
    return {name: value for name, value in results.items() if isinstance(value, float)}


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is the better one: losses, errors (mse, mae) and perplexities, under
    any prefix (`eval_loss`, `masked_lm_loss`, `pseudo_perplexity`); every other metric (accuracy, f1, pearson,
    ...) is better higher."""
    return metric.endswith(LOWER_IS_BETTER_ENDINGS)


def cautious_bound(summary: dict, metric: str) -> float:
    """The end of the 95% interval that is worse for `metric`, so a group ranks by what it reliably reaches:
    the upper bound when lower is better, the lower bound otherwise."""
    low, high = summary["ci95"]
    return high if lower_is_better(metric) else low
