"""`llmkit sweep CONFIG [key=value ...]`: one run per trial, then the trials ranked. A grid (--grid, several make
their product) tries every combination of the values; an Optuna search (--trials N --space FILE: llmkit.search)
draws N trials. With --seeds each trial is a seed group, ranked by the worse end of its 95% interval.

    llmkit sweep configs/tiny/finetune.yaml --grid train.learning_rate=1e-4,3e-4,1e-3 --grid train.warmup_ratio=0,0.1
    llmkit sweep configs/tiny/finetune.yaml --trials 20 --space space.yaml --seeds 1,2,3

output_dir gets trial-<k>/ (with seeds trial-<k>/seed-<s>/), sweep.md and sweep.png (the `llmkit compare` table
of the trials, best first by train.metric_for_best_model, else loss), and best.yaml: the best trial's resolved
config with output_dir/best as its output_dir, which trains as it is. The stage is the config's kind: pretrain for
a config with a `pretrain:` section, else finetune. A rerun skips the finished trials; an interrupted trial
continues from its checkpoint with train.resume_from_checkpoint=latest.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from llmkit.checkpoint import finished_state
from llmkit.compare import compare_runs, curves_path
from llmkit.config import Config, load_config
from llmkit.config.compose import compose
from llmkit.console import is_main_process, say
from llmkit.errors import LlmkitError, NonFiniteLossError
from llmkit.launch import forget_run, several_runs
from llmkit.seed_stats import cautious_bound, lower_is_better, summarize_seeds
from llmkit.seeds import headline_metric, parse_seeds, run_seeds, seed_dirs

TRIAL_DIR = "trial-{}"
PARAMS_FILE = "trial.json"  # in each trial's folder: its overrides, checked on a rerun
TABLE, BEST = "sweep.md", "best.yaml"
# Keys a trial cannot vary, and why.
RESERVED = {"output_dir": "each trial runs in output_dir/trial-<k>/", "seed": "give the seeds with --seeds"}


@dataclass
class Trial:
    number: int
    params: list[str]  # its overrides, key=value
    score: float | None  # its metric (a seed group's: the worse end of the 95% interval); None: it diverged


@dataclass
class Sweep:
    """What every trial shares: the config and overrides it starts from, the stage, seeds, folder and metric."""

    config_path: str
    overrides: list[str]
    stage: str
    seeds: list[int] | None
    out: Path
    metric: str
    seed: int  # the config's: an Optuna sampler's seed

    def trial_config(self, number: int, params: list[str]) -> Config:
        cfg = load_config(self.config_path, [*self.overrides, *params], stage=self.stage)
        return cfg.model_copy(update={"output_dir": str(self.out / TRIAL_DIR.format(number))})

    def run_trial(self, number: int, params: list[str], cfg: Config) -> Trial:
        """Train the trial (each of its seeds), skipping what finished in an earlier launch; score what it wrote.
        A trial whose loss became NaN is a result too (a learning rate too high): the sweep goes on without it."""
        trial_dir = Path(cfg.output_dir)
        say(f"trial-{number}: {' '.join(params) or 'the config as it is'}")
        _record_params(trial_dir, params)
        try:
            if self.seeds:
                run_seeds(cfg, self.seeds, self._unless_finished)
            else:
                self._unless_finished(cfg)
        except NonFiniteLossError as e:
            forget_run()  # the run ended without end_run
            say(f"trial-{number} failed: {e}; the sweep goes on")
            return Trial(number, params, None)
        return Trial(number, params, self._score(trial_dir))

    def _unless_finished(self, cfg: Config) -> dict:
        """A sweep never trains a finished run again, with or without train.resume_from_checkpoint=latest."""
        from llmkit.stages import finetune, pretrain
        from llmkit.stages.common import RunStart, report_finished

        out = Path(cfg.output_dir)
        if (done := finished_state(out)) is not None:
            return report_finished(RunStart(out, finished=done))
        return {"pretrain": pretrain.run, "finetune": finetune.run}[self.stage](cfg, self.config_path)

    def _score(self, trial_dir: Path) -> float:
        runs = seed_dirs(trial_dir, self.seeds) if self.seeds else [trial_dir]
        summary = summarize_seeds(runs).get(self.metric)
        if summary is None:
            raise LlmkitError(f"{trial_dir}: its evaluation (eval_results.json) has no {self.metric!r}; a sweep "
                              "ranks trials by train.metric_for_best_model (else loss) on the validation data")
        return cautious_bound(summary, self.metric)


def stage_of(config_path: str | os.PathLike, overrides: list[str]) -> str:
    """The stage a sweep runs: pretrain for a config with a `pretrain:` section, else finetune."""
    return "pretrain" if "pretrain" in compose(config_path, overrides).tree else "finetune"


def run_sweep(cfg: Config, config_path: str, overrides: list[str], *, grids: list[str], trials: int | None,
              space: Path | None, sampler: str | None, seeds: str | None) -> list[Trial]:
    """Every trial of the grid or the search, then sweep.md and best.yaml (written by the main process)."""
    _check_options(grids, trials, space, sampler)
    sweep = Sweep(config_path, list(overrides), cfg.kind, parse_seeds(seeds) if seeds else None,
                  Path(cfg.output_dir), headline_metric(cfg), cfg.seed)
    with several_runs():  # under torchrun every trial is trained by the same DDP job
        if grids:
            ran = run_grid(sweep, grid_params(grids))
        else:
            from llmkit.search import run_search

            ran = run_search(sweep, space, trials, sampler or "tpe")
        best = best_trial(sweep, ran)
        if is_main_process():
            _write_results(sweep, ran, best)
    return ran


def _check_options(grids: list[str], trials: int | None, space: Path | None, sampler: str | None) -> None:
    searching = trials is not None or space is not None or sampler is not None
    if grids and searching:
        raise LlmkitError("--grid and --trials/--space/--sampler: a sweep is a grid or an Optuna search, not both")
    if not grids and (trials is None or space is None):
        raise LlmkitError("sweep: give --grid KEY=V1,V2,... (a grid), or --trials N with --space FILE (an Optuna "
                          "search)")


def check_key(key: str, option: str) -> None:
    """A key that every trial must keep as the sweep sets it."""
    if key in RESERVED:
        raise LlmkitError(f"{option} {key}: a sweep cannot vary it: {RESERVED[key]}")


def grid_params(grids: list[str]) -> list[list[str]]:
    """Each trial's overrides: every combination of the --grid values, the first --grid varying slowest. Values
    are overrides' values (YAML scalars, or a [list] or {mapping} kept whole)."""
    axes: dict[str, list[str]] = {}
    for item in grids:
        key, sep, text = item.partition("=")
        if not sep or not key or not text.strip():
            raise LlmkitError(f"--grid {item!r}: expected KEY=VALUE1,VALUE2,..., e.g. --grid "
                              "train.learning_rate=1e-5,3e-5")
        check_key(key, "--grid")
        if key in axes:
            raise LlmkitError(f"--grid {key}: given twice; list all its values in one --grid")
        values = _split_values(text)
        if "" in values or len(set(values)) < len(values):
            raise LlmkitError(f"--grid {key}: {text!r} has an empty or repeated value")
        axes[key] = [f"{key}={value}" for value in values]
    return [list(combination) for combination in itertools.product(*axes.values())]


def _split_values(text: str) -> list[str]:
    """At the commas outside brackets: `[a,b],[c]` is two values."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    return [*values, current.strip()]


def run_grid(sweep: Sweep, params: list[list[str]]) -> list[Trial]:
    configs = [sweep.trial_config(number, trial) for number, trial in enumerate(params)]  # every value checked first
    return [sweep.run_trial(number, trial, cfg) for number, (trial, cfg) in enumerate(zip(params, configs))]


def _record_params(trial_dir: Path, params: list[str]) -> None:
    """Trial k of a rerun must be trial k of the first launch: its finished run is taken as this trial's."""
    path = trial_dir / PARAMS_FILE
    if path.exists() and (before := json.loads(path.read_text())["params"]) != params:
        raise LlmkitError(f"{trial_dir}: this trial ran with {' '.join(before)}, and this sweep gives it "
                          f"{' '.join(params)}; rerun the same sweep, or choose another output_dir")
    if is_main_process() and not path.exists():
        trial_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")  # whole or absent for the other processes reading it
        tmp.write_text(json.dumps({"params": params}, indent=2) + "\n")
        os.replace(tmp, path)


def best_trial(sweep: Sweep, trials: list[Trial]) -> Trial:
    """By the score; ties go to the earlier trial, as in the table's ranking."""
    scored = [trial for trial in trials if trial.score is not None]
    if not scored:
        raise LlmkitError(f"sweep: every trial in {sweep.out} failed (the loss became NaN or infinite); lower "
                          "train.learning_rate, or set train.on_nonfinite_loss=skip")
    pick = min if lower_is_better(sweep.metric) else max
    return pick(scored, key=lambda trial: trial.score)


def _write_results(sweep: Sweep, trials: list[Trial], best: Trial) -> None:
    ran = [sweep.out / TRIAL_DIR.format(trial.number) for trial in trials]
    table = compare_runs([path for path in ran if _holds_runs(path)], sweep.out / TABLE, sweep.metric)
    best_yaml = write_best_config(sweep, best)
    say("\n".join([table, f"sweep: {len(trials)} trials ranked by {sweep.metric} in {sweep.out / TABLE} "
                          f"({curves_path(sweep.out / TABLE)})",
                   f"  best: trial-{best.number} ({' '.join(best.params)}), {_score_text(sweep, best)}",
                   f"  its config: {best_yaml}, to train again: {_command(sweep, best_yaml)}"]))


def _score_text(sweep: Sweep, trial: Trial) -> str:
    if not sweep.seeds:
        return f"{sweep.metric} {trial.score:.4f}"
    seeds = ", ".join(map(str, sweep.seeds))
    return f"{sweep.metric} {trial.score:.4f} (the worse end of its 95% interval over seeds {seeds})"


def _holds_runs(trial_dir: Path) -> bool:
    """A folder `compare` can show: a run, or seed runs (a trial that failed before it wrote anything has none)."""
    return (trial_dir / "config.yaml").exists() or any(trial_dir.glob("seed-*/config.yaml"))


def write_best_config(sweep: Sweep, best: Trial) -> Path:
    """The best trial's resolved config, with output_dir/best as its output_dir, headed by how to run it."""
    path = sweep.out / BEST
    cfg = sweep.trial_config(best.number, best.params)
    cfg = cfg.model_copy(update={"output_dir": str(sweep.out / "best")})
    header = (f"# The best trial of the sweep in {sweep.out}: trial-{best.number} ({' '.join(best.params)}), "
              f"{_score_text(sweep, best)}.\n#   {_command(sweep, path)}\n")
    path.write_text(header + _runnable_yaml(cfg), encoding="utf-8")
    return path


def _runnable_yaml(cfg: Config) -> str:
    """The resolved config without the other kind's section: it is null, and `llmkit finetune` refuses a config
    that has a `pretrain:` key at all (and `llmkit pretrain` one with `finetune:`)."""
    tree = cfg.model_dump(mode="json")
    del tree["pretrain" if cfg.kind == "finetune" else "finetune"]
    return yaml.safe_dump(tree, sort_keys=False)


def _command(sweep: Sweep, config: Path) -> str:
    seeds = f" --seeds {','.join(map(str, sweep.seeds))}" if sweep.seeds else ""
    return f"llmkit {sweep.stage} {config}{seeds}"
