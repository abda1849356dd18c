"""The run report: output_dir/report.md with PNG plots under output_dir/plots/, from what a run leaves behind
(metrics.jsonl, eval_results.json, trainer_state.json), written at the end of training and by
`llmkit report OUTPUT_DIR`. Plots by matplotlib (Agg backend, no display needed):

    training.png           loss, learning rate, gradient norm and tokens/s against the step
    evaluation.png         each evaluation metric against the step
    confusion_matrix.png   single-label classification: gold (rows) against predicted (columns)
    per_class.png          classification, multi-label, NER: precision / recall / F1 per class or entity type
    predictions.png        regression: predicted against gold, per example
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from llmkit.errors import LlmkitError
from llmkit.runlog import read_json, read_metrics

REPORT, PLOTS = "report.md", "plots"
TRAINING_CURVES = (("loss", "training loss"), ("learning_rate", "learning rate"), ("grad_norm", "gradient norm"),
                   ("tokens_per_s", "tokens / s"))
MAX_EVAL_PLOTS = 8


def write_report(out: Path) -> Path:
    """report.md and its plots for the run in `out`; the folder must hold a metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    log = out / "metrics.jsonl"
    if not log.exists():
        raise LlmkitError(f"OUTPUT_DIR: {out} holds no metrics.jsonl: is it a llmkit run folder?")
    records = read_metrics(log)
    results = read_json(out / "eval_results.json")
    state = read_json(out / "trainer_state.json") or _latest_checkpoint_state(out)
    (out / PLOTS).mkdir(exist_ok=True)
    plots = [plot for plot in (_training(records, out), _evaluation(records, out), _confusion(results, out),
                               _per_class(results, out), _scatter(results, out)) if plot]
    lines = [f"# Run report: {out.name}", "", *_facts(out, records, state), "", *_metrics(results, state), ""]
    for title, path in plots:
        lines += [f"## {title}", "", f"![{title}]({path.relative_to(out)})", ""]
    (out / REPORT).write_text("\n".join(lines))
    return out / REPORT


def _latest_checkpoint_state(out: Path) -> dict:
    """An interrupted run's state: its newest checkpoint's (the final trainer_state.json comes at the end)."""
    from llmkit.checkpoint import STATE_FILE, checkpoints

    found = checkpoints(out)
    return read_json(found[-1] / STATE_FILE) if found else {}


def _facts(out: Path, records: list[dict], state: dict) -> list[str]:
    steps = [r for r in records if "loss" in r]
    rates = [r["tokens_per_s"] for r in steps if r.get("tokens_per_s")]
    stopped = {"max_time": "train.max_time", "early_stopping": "early stopping"}.get(state.get("stopped_by"))
    return ["| | |", "|---|---|",
            f"| steps | {state.get('global_step', steps[-1]['step'] if steps else 0):,} of "
            f"{state.get('total_steps', 0):,}" + (f" (stopped by {stopped})" if stopped else "") + " |",
            f"| training time | {state.get('train_seconds', 0):.1f} s |",
            f"| throughput | {statistics.median(rates):,.0f} tokens/s (median of the logged windows) |" if rates
            else "| throughput | not logged |",
            f"| model | `{out}/` |",
            f"| checkpoints | {', '.join(sorted(p.name for p in out.glob('checkpoint-*'))) or 'none kept'} |"]


def _metrics(results: dict, state: dict) -> list[str]:
    scalars = {k: v for k, v in results.items() if isinstance(v, float)}
    lines = ["## Final evaluation", ""]
    if not scalars:
        return lines + ["No evaluation ran."]
    lines += ["| metric | value |", "|---|---|", *(f"| {k} | {v:.4f} |" for k, v in scalars.items())]
    if state.get("best_step") is not None:
        lines += ["", f"Best evaluation: {state['best_metric']:.4f} at step {state['best_step']}"
                  + (f" ({state['best_checkpoint']})" if state.get("best_checkpoint") else "") + "."]
    return lines


def _training(records: list[dict], out: Path):
    import matplotlib.pyplot as plt

    steps = [r for r in records if "loss" in r]
    if not steps:
        return None
    figure, axes = plt.subplots(2, 2, figsize=(10, 6.5), constrained_layout=True)
    for ax, (key, label) in zip(axes.flat, TRAINING_CURVES):
        points = [(r["step"], r[key]) for r in steps if isinstance(r.get(key), (int, float))]
        ax.plot(*zip(*points), marker="." if len(points) < 50 else None) if points else ax.text(
            0.5, 0.5, "not logged", ha="center", transform=ax.transAxes)
        ax.set(title=label, xlabel="step", ylabel=label)
        ax.grid(alpha=0.3)
    return _save(figure, "Training", out / PLOTS / "training.png")


def _evaluation(records: list[dict], out: Path):
    import matplotlib.pyplot as plt

    evaluations = [r for r in records if any(k.startswith("eval_") for k in r)]
    # Micro averages repeat accuracy for single-label tasks; the macro scores are plotted.
    names = [k for k in evaluations[-1] if k.startswith("eval_") and isinstance(evaluations[-1][k], float)
             and not k.endswith("_micro")] if evaluations else []
    names = names[:MAX_EVAL_PLOTS]
    if not names:
        return None
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), constrained_layout=True,
                                squeeze=False)
    for ax, name in zip(axes.flat, names):
        points = [(r["step"], r[name]) for r in evaluations if isinstance(r.get(name), (int, float))]
        ax.plot(*zip(*points), marker="o")
        ax.set(title=name.removeprefix("eval_"), xlabel="step", ylabel=name.removeprefix("eval_"))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    return _save(figure, "Evaluation during training", out / PLOTS / "evaluation.png")


def _confusion(results: dict, out: Path):
    import matplotlib.pyplot as plt

    matrix = results.get("confusion_matrix")
    if not matrix:
        return None
    labels, counts = matrix["labels"], matrix["matrix"]
    size = max(4.0, 0.6 * len(labels) + 2)
    figure, ax = plt.subplots(figsize=(size + 1, size), constrained_layout=True)
    image = ax.imshow(counts, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="gold", title="Confusion matrix (validation)")
    top = max(max(row) for row in counts) or 1
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            ax.text(j, i, count, ha="center", va="center", color="white" if count > top / 2 else "black")
    figure.colorbar(image, ax=ax, label="examples")
    return _save(figure, "Confusion matrix", out / PLOTS / "confusion_matrix.png")


def _per_class(results: dict, out: Path):
    import matplotlib.pyplot as plt
    import numpy as np

    classes = results.get("per_class")
    if not classes:
        return None
    names = list(classes)
    x = np.arange(len(names))
    figure, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4), constrained_layout=True)
    for offset, score in zip((-0.27, 0, 0.27), ("precision", "recall", "f1")):
        ax.bar(x + offset, [classes[n][score] for n in names], width=0.27, label=score)
    ax.set(xticks=x, ylim=(0, 1.05), ylabel="score", title="Per class (validation)")
    ax.set_xticklabels([f"{n}\n({classes[n]['support']})" for n in names])
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(figure, "Per class", out / PLOTS / "per_class.png")


def _scatter(results: dict, out: Path):
    import matplotlib.pyplot as plt

    pairs = results.get("predictions")
    if not pairs or not pairs.get("gold"):
        return None
    gold, predicted = pairs["gold"], pairs["predicted"]
    figure, ax = plt.subplots(figsize=(5.5, 5), constrained_layout=True)
    ax.scatter(gold, predicted, s=8, alpha=0.5)
    low, high = min(min(gold), min(predicted)), max(max(gold), max(predicted))
    ax.plot([low, high], [low, high], color="grey", linewidth=1, label="predicted = gold")
    ax.set(xlabel="gold", ylabel="predicted", title=f"Predicted against gold (validation, {len(gold):,} examples)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _save(figure, "Predicted against gold", out / PLOTS / "predictions.png")


def _save(figure, title: str, path: Path):
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=100)
    plt.close(figure)
    return title, path
