"""`--seeds 1,2,3` on `pretrain` and `finetune`: one run per seed, in output_dir/seed-<s>/ with the config's
`seed` set to s, one after another in this launch (under torchrun, in the same DDP job). Then output_dir/seeds.json
and seeds.md give each metric of the final evaluations over the seeds (mean, std, 95% interval, min, max, n:
llmkit.seed_stats) and flag the seeds that collapsed.

    llmkit finetune configs/tiny/finetune.yaml --seeds 1,2,3
    llmkit finetune configs/tiny/finetune.yaml --seeds 1,2,3 train.resume_from_checkpoint=latest   # after a kill

Rerun with `latest`, a killed multi-seed run leaves its finished seeds as they are, resumes the interrupted one
from its checkpoint and then trains the rest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from llmkit.config import Config
from llmkit.console import is_main_process, say
from llmkit.errors import LlmkitError
from llmkit.launch import several_runs
from llmkit.runlog import read_json, read_metrics
from llmkit.train_state import best_metric
from llmkit.seed_stats import RESULTS, summarize_seeds

SEED_DIR = "seed-{}"
SINGLE_RUN_FILES = ("config.yaml", "metrics.jsonl", "model.safetensors", "adapter_model.safetensors")
SUMMARY_JSON, SUMMARY_MD = "seeds.json", "seeds.md"
COLLAPSED = "collapsed"  # the key of seeds.json beside the metrics: {seed: why}
MAJORITY_MARGIN = 0.01  # within one point of always predicting the majority class, a classifier learnt nothing
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


def parse_seeds(text: str) -> list[int]:
    """`1,2,3` -> [1, 2, 3]; anything but distinct non-negative integers is an error naming --seeds."""
    parts = [part.strip() for part in text.split(",")]
    for part in parts:
        if not re.fullmatch(r"[0-9]+", part) or int(part) > MAX_SEED:
            raise LlmkitError(f"--seeds: {part!r} is not a seed; give integers from 0 to {MAX_SEED} separated by "
                              "commas, e.g. --seeds 1,2,3")
    seeds = [int(part) for part in parts]
    twice = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if twice:
        raise LlmkitError(f"--seeds: {', '.join(map(str, twice))} given twice; each seed is one run")
    return seeds


def headline_metric(cfg: Config) -> str:
    """The metric a run is judged by: train.metric_for_best_model, else loss, named as eval_results.json names it."""
    return best_metric(cfg.train)[0]


def seed_dirs(out: Path, seeds: list[int]) -> list[Path]:
    return [Path(out) / SEED_DIR.format(seed) for seed in seeds]


def run_seeds(cfg: Config, seeds: list[int], run_one) -> dict:
    """`run_one(config)` for each seed in turn, then seeds.json and seeds.md; returns what seeds.json holds."""
    out = Path(cfg.output_dir)
    refuse_single_run(out)
    runs = seed_dirs(out, seeds)
    with several_runs():
        for i, (seed, run_dir) in enumerate(zip(seeds, runs), 1):
            say(f"seed {seed} ({i} of {len(seeds)}): {run_dir}")
            run_one(cfg.model_copy(update={"seed": seed, "output_dir": str(run_dir)}))
        summary = summarize_seeds(runs)
        collapsed = {str(seed): why for seed, run_dir in zip(seeds, runs) if (why := collapse_reason(run_dir))}
        if is_main_process():  # inside the block: the other processes wait for these files before they go
            (out / SUMMARY_JSON).write_text(json.dumps({**summary, COLLAPSED: collapsed}, indent=2) + "\n")
            (out / SUMMARY_MD).write_text(seeds_markdown(out, seeds, summary, collapsed))
            say(seeds_lines(out, seeds, summary, collapsed, headline_metric(cfg)))
    return {**summary, COLLAPSED: collapsed}


def refuse_single_run(out: Path) -> None:
    """A folder holding one run without --seeds is not mixed with seed folders (train.overwrite_output_dir clears
    a seed's folder, never the single run beside them)."""
    from llmkit.checkpoint import checkpoints

    found = next((out / name for name in SINGLE_RUN_FILES if (out / name).exists()), None) or next(
        iter(checkpoints(out)), None)
    if found is not None:
        raise LlmkitError(f"output_dir: {out} holds a run trained without --seeds ({found.name}); --seeds puts each "
                          f"seed's run in {out}/seed-<s>/: choose another output_dir, or remove that run first")


def collapse_reason(run_dir: Path) -> str | None:
    """Why a run learnt nothing, or None: a classifier at or below the majority-class rate of the evaluated split
    plus one point, or a training loss that did not fall from the first logged step to the last."""
    results = read_json(Path(run_dir) / RESULTS)
    return _majority_reason(results) or _flat_loss_reason(read_metrics(Path(run_dir) / "metrics.jsonl"))


def _majority_reason(results: dict) -> str | None:
    """The confusion matrix's rows count each gold class (as per_class supports do). Only single-label
    classification writes one, and only there do the classes split the examples, so that the largest share is
    what always predicting that class scores; multi-label and entity supports overlap or count spans. A multi-task
    run prefixes each task's keys (`sst2_confusion_matrix`, `sst2_accuracy`)."""
    for key, confusion in results.items():
        if not key.endswith("confusion_matrix"):
            continue
        prefix = key.removesuffix("confusion_matrix")
        accuracy, gold = results.get(f"{prefix}accuracy"), [sum(row) for row in confusion["matrix"]]
        if not isinstance(accuracy, float) or not sum(gold):
            continue
        majority = max(gold) / sum(gold)
        if accuracy <= majority + MAJORITY_MARGIN:
            return (f"{prefix}accuracy {accuracy:.4f} is at or below the majority class's rate {majority:.4f} "
                    f"plus {MAJORITY_MARGIN:.2f}")
    return None


def _flat_loss_reason(records: list[dict]) -> str | None:
    losses = [(record["step"], record["loss"]) for record in records if isinstance(record.get("loss"), (int, float))]
    if len(losses) < 2:  # one logged step shows no trend
        return None
    (first_step, first), (last_step, last) = losses[0], losses[-1]
    if last < first:
        return None
    return f"training loss did not fall: {first:.4f} at step {first_step}, {last:.4f} at step {last_step}"


def seeds_markdown(out: Path, seeds: list[int], summary: dict, collapsed: dict) -> str:
    lines = [f"# Seeds of `{out}`", "",
             f"{len(seeds)} runs of one config, seeds {_listed(seeds)}, in `seed-<s>/`. Each metric of their final "
             "evaluation (eval_results.json): mean, sample standard deviation, the 95% confidence interval of the "
             "mean (Student t), min, max, and n, the seeds with results.", "",
             "| metric | mean | std | 95% CI | min | max | n |", "|---|---|---|---|---|---|---|"]
    for name, stats in summary.items():
        low, high = stats["ci95"]
        lines.append(f"| {name} | {stats['mean']:.4f} | {stats['std']:.4f} | [{low:.4f}, {high:.4f}] | "
                     f"{stats['min']:.4f} | {stats['max']:.4f} | {stats['n']} |")
    lines += ["", *(f"- {line}" for line in _collapse_lines(collapsed))]
    return "\n".join(lines) + "\n"


def seeds_lines(out: Path, seeds: list[int], summary: dict, collapsed: dict, metric: str) -> str:
    """What a multi-seed run ends with: its headline metric and loss over the seeds, the collapsed ones, the files."""
    shown = [name for name in dict.fromkeys([metric, "loss"]) if name in summary]
    lines = [f"seeds {_listed(seeds)}: " + ("; ".join(_interval(name, summary[name]) for name in shown)
                                            if shown else "no evaluation results")]
    lines += [f"  {line}" for line in _collapse_lines(collapsed)]
    lines.append(f"  every metric: {out / SUMMARY_JSON}, {out / SUMMARY_MD}")
    return "\n".join(lines)


def _interval(name: str, stats: dict) -> str:
    low, high = stats["ci95"]
    return (f"{name} {stats['mean']:.4f} ± {(high - low) / 2:.4f} "
            f"(95% CI [{low:.4f}, {high:.4f}], n={stats['n']})")


def _collapse_lines(collapsed: dict) -> list[str]:
    if not collapsed:
        return ["no seed collapsed"]
    return [f"seed {seed} collapsed: {why}" for seed, why in collapsed.items()]


def _listed(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))
