"""`llmkit compare RUN_DIR...`: one Markdown table of several runs, to paste into a pull request, and one PNG
that overlays their curves. Each row is a run folder, or a seed group (a folder of `seed-*/` runs, shown as
mean ± 95% confidence half-width over its seeds); rows are ranked best first by one metric.

    llmkit compare runs/lr-1e-3 runs/lr-5e-4 runs/lr-1e-4-seeds --metric accuracy --output compare.md

Columns: the final evaluation (eval_results.json), steps, wall time (run_info.json) and only the config
keys (config.yaml, flattened to `section.key`) whose values differ between the rows.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from llmkit.console import format_duration
from llmkit.errors import LlmkitError
from llmkit.runlog import read_json, read_metrics
from llmkit.seed_stats import (RESULTS, cautious_bound, lower_is_better, scalar_results, seed_summary,
                               summarize_seeds)

CONFIG, RUN_INFO, STATE = "config.yaml", "run_info.json", "trainer_state.json"
SEED_RUNS = "seed-*"
# Every run has its own output_dir, so it would always count as a difference.
IGNORED_KEYS = {"output_dir"}
MISSING = "—"


@dataclass
class Row:
    """One line of the table: a run, or a seed group whose `runs` are its seed-*/ folders."""

    label: str
    runs: list[Path]
    is_seed_group: bool
    metrics: dict[str, dict]  # name -> seed_summary (a run's own value: n=1, ci95 [v, v])
    config: dict[str, str]  # flattened key -> value as shown; a group's differing values joined
    steps: str
    wall_seconds: float | None
    unfinished: list[str]  # "interrupted", or "seed-2 failed" for a group's runs


def compare_runs(run_dirs: list[Path], output: Path, metric: str | None = None) -> str:
    """Write `output` (Markdown) and the curves PNG beside it; return the Markdown."""
    if not run_dirs:
        raise LlmkitError("RUN_DIR: name at least one run folder (llmkit's output_dir) or seed group to compare")
    rows = [_load_row(Path(path)) for path in run_dirs]
    metric = _ranking_metric(rows, metric)
    rows = rank_rows(rows, metric)
    output.parent.mkdir(parents=True, exist_ok=True)
    plot = _plot_curves(rows, metric, curves_path(output))
    markdown = "\n".join([*_notes(rows, metric), "", *_table(rows, metric), "",
                          f"![Training loss and eval {metric} of each run]({plot.name})", ""])
    output.write_text(markdown)
    return markdown


def curves_path(output: Path) -> Path:
    """The PNG beside the Markdown: compare.md -> compare.png."""
    return output.with_suffix(".png")


def _load_row(path: Path) -> Row:
    if not path.is_dir():
        raise LlmkitError(f"RUN_DIR: {path} {'is not a folder' if path.exists() else 'does not exist'}")
    seed_runs = _seed_runs(path)
    if seed_runs:
        return _seed_group_row(path, seed_runs)
    if not (path / CONFIG).exists():
        raise LlmkitError(f"RUN_DIR: {path} holds no {CONFIG}: is it a llmkit run folder, or a seed group "
                          f"with {SEED_RUNS}/ runs?")
    status = _unfinished(path)
    return Row(str(path), [path], False, {k: seed_summary([v]) for k, v in scalar_results(path).items()},
               _shown_config(path), str(_steps(path)), _wall_seconds(path), [status] if status else [])


def _seed_runs(path: Path) -> list[Path]:
    """A seed group's runs; none for a run folder (it has its own eval_results.json)."""
    if (path / RESULTS).exists():
        return []
    found = [p for p in path.glob(SEED_RUNS) if (p / CONFIG).exists()]
    return sorted(found, key=lambda p: (len(p.name), p.name))  # seed-2 before seed-10


def _seed_group_row(path: Path, runs: list[Path]) -> Row:
    configs = [_shown_config(run) for run in runs]
    keys = dict.fromkeys(key for config in configs for key in config)
    merged = {key: ", ".join(dict.fromkeys(config.get(key, MISSING) for config in configs)) for key in keys}
    steps = sorted({_steps(run) for run in runs})
    seconds = [s for s in map(_wall_seconds, runs) if s is not None]
    return Row(str(path), runs, True, summarize_seeds(runs), merged,
               str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}",
               statistics.fmean(seconds) if seconds else None,
               [f"{run.name} {status}" for run in runs if (status := _unfinished(run))])


def _shown_config(run: Path) -> dict[str, str]:
    from llmkit.config import flatten

    tree = yaml.safe_load((run / CONFIG).read_text()) or {}
    return {key: _shown_value(value) for key, value in flatten(tree).items() if key not in IGNORED_KEYS}


def _shown_value(value) -> str:
    """A config value as the YAML would read (null, true, 0.001, [a, b]), fit for one table cell."""
    return value if isinstance(value, str) else json.dumps(value)


def _unfinished(run: Path) -> str | None:
    """None for a finished run, else how it ended (no status: still running, or killed before it could say)."""
    status = read_json(run / RUN_INFO).get("status")
    return None if status == "finished" else status or "not finished"


def _steps(run: Path) -> int:
    """The final step; an unfinished run has no trainer_state.json yet, so its last logged step."""
    state = read_json(run / STATE)
    if "global_step" in state:
        return state["global_step"]
    return max((record.get("step", 0) for record in read_metrics(run / "metrics.jsonl")), default=0)


def _wall_seconds(run: Path) -> float | None:
    """From start to end as run_info.json has them (to the second): setup and the final save count too."""
    info = read_json(run / RUN_INFO)
    if not info.get("started") or not info.get("ended"):
        return None
    started, ended = (datetime.strptime(info[key], "%Y-%m-%dT%H:%M:%S%z") for key in ("started", "ended"))
    return (ended - started).total_seconds()


def _ranking_metric(rows: list[Row], asked: str | None) -> str:
    """--metric, else the first run's train.metric_for_best_model, else loss; `eval_` prefixes are dropped as
    eval_results.json has none."""
    named = rows[0].config.get("train.metric_for_best_model", "null")  # a YAML null is shown as "null"
    metric = (asked or (named if named != "null" else "loss")).removeprefix("eval_")
    available = sorted({name for row in rows for name in row.metrics})
    if available and metric not in available:
        source = "--metric" if asked else "train.metric_for_best_model"
        raise LlmkitError(f"{source}: {metric!r} is not in the runs' eval_results.json; there are {available}")
    return metric


def rank_rows(rows: list[Row], metric: str) -> list[Row]:
    """Best first by `metric`; a seed group by the worse end of its 95% interval (a run's own value otherwise);
    rows without the metric (unfinished runs) last, in the order given."""
    better_first = 1 if lower_is_better(metric) else -1
    ranked = [row for row in rows if metric in row.metrics]
    ranked.sort(key=lambda row: better_first * cautious_bound(row.metrics[metric], metric))
    return ranked + [row for row in rows if metric not in row.metrics]


def _differing_keys(rows: list[Row]) -> list[str]:
    keys = dict.fromkeys(key for row in rows for key in row.config)
    return [key for key in keys if len({row.config.get(key, MISSING) for row in rows}) > 1]


def _notes(rows: list[Row], metric: str) -> list[str]:
    direction = "lower" if lower_is_better(metric) else "higher"
    bound = "upper" if lower_is_better(metric) else "lower"
    lines = ["# Run comparison", "",
             f"Ranked best first by `{metric}` of the final evaluation ({direction} is better)."]
    if any(row.is_seed_group for row in rows):
        lines += [f"Seed groups show each metric as mean ± 95% confidence half-width (Student t) over their seeds "
                  f"(n: the seeds with results), rank by the {bound} bound of that interval, and give steps and "
                  f"wall time per run (mean)."]
    return lines + ["Config: only the keys that differ between the rows (output_dir left out)."]


def _table(rows: list[Row], metric: str) -> list[str]:
    names = list(dict.fromkeys([metric, *(name for row in rows for name in row.metrics)]))
    keys = _differing_keys(rows)
    header = ["run", *names, "steps", "wall time", *(f"`{key}`" for key in keys)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_run_cell(row), *(_metric_cell(row, name) for name in names), row.steps,
                 _duration(row.wall_seconds), *(row.config.get(key, MISSING) for key in keys)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def _run_cell(row: Row) -> str:
    notes = [f"{len(row.runs)} seeds"] if row.is_seed_group else []
    return f"`{row.label}`" + (f" ({'; '.join(notes + row.unfinished)})" if notes or row.unfinished else "")


def _metric_cell(row: Row, name: str) -> str:
    summary = row.metrics.get(name)
    if summary is None:
        return MISSING
    if not row.is_seed_group:
        return f"{summary['mean']:.4f}"
    half_width = (summary["ci95"][1] - summary["ci95"][0]) / 2
    return f"{summary['mean']:.4f} ± {half_width:.4f} (n={summary['n']})"


def _duration(seconds: float | None) -> str:
    return MISSING if seconds is None else format_duration(seconds)


def _plot_curves(rows: list[Row], metric: str, path: Path) -> Path:
    """Training loss and eval `metric` against the step, one colour per row (a seed group's runs share it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, key, title in ((axes[0], "loss", "training loss"), (axes[1], f"eval_{metric}", f"eval {metric}")):
        for row, colour in zip(rows, _colours(len(rows))):
            _plot_row(ax, row, key, colour)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", transform=ax.transAxes)
        ax.set(title=title, xlabel="step", ylabel=title)
        ax.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _plot_row(ax, row: Row, key: str, colour) -> None:
    curves = [points for run in row.runs if (points := _curve(run, key))]
    for i, points in enumerate(curves):
        ax.plot(*zip(*points), color=colour, alpha=0.6 if row.is_seed_group else 1.0,
                marker="." if len(points) < 50 else None, label=_legend_label(row) if i == 0 else None)


def _curve(run: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` in the run's metrics.jsonl: training lines for loss, evaluation lines for eval_*."""
    return [(r["step"], r[key]) for r in read_metrics(run / "metrics.jsonl") if isinstance(r.get(key), (int, float))]


def _legend_label(row: Row) -> str:
    return f"{row.label} ({len(row.runs)} seeds)" if row.is_seed_group else row.label


def _colours(count: int) -> list:
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(count)]
