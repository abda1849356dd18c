"""The Optuna search of `llmkit sweep CONFIG --trials N --space space.yaml [--sampler tpe|random]`: N trials in
all, each drawn by TPE (from the results of those before) or at random, seeded by the config's seed.

    # space.yaml: a config key, then a range (log: true for a log scale; integers when both ends are; step: an
    # optional grid) or a list of choices
    train.learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}
    train.warmup_ratio: {low: 0.0, high: 0.2}
    train.per_device_train_batch_size: [16, 32, 64]

The study is kept in output_dir/optuna.db (sqlite, Optuna's own storage), so a rerun continues it: finished trials
stay as they are, a trial left running by a kill is trained again with its parameters (resuming its checkpoint
with train.resume_from_checkpoint=latest), and new trials are drawn until there are N. One process only: under
torchrun each process would draw trials of its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from llmkit.errors import LlmkitError
from llmkit.seed_stats import lower_is_better
from llmkit.sweep import Sweep, Trial, check_key

SAMPLERS = ("tpe", "random")
STUDY_NAME = "llmkit-sweep"
STORAGE = "optuna.db"
RANGE_KEYS = {"low", "high", "log", "step"}


def run_search(sweep: Sweep, space_path: Path, trials: int, sampler: str) -> list[Trial]:
    """The study's trials once there are `trials` of them; the ones left running by a kill first."""
    optuna = _optuna(sampler)
    space = read_space(space_path)
    for probe in _probes(space):  # the keys and both ends of each range, checked before anything trains
        sweep.trial_config(0, probe)
    sweep.out.mkdir(parents=True, exist_ok=True)
    study = _study(sweep, sampler, seed_offset=0)
    for left in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        _tell(study, _run(sweep, left.number, left.params))
    while len(study.trials) < trials:
        # A fresh sampler per trial, seeded by how many came before: trial k draws the same whether or not the
        # sweep was stopped and rerun in between (a sampler's random state is not in the study).
        study = _study(sweep, sampler, seed_offset=len(study.trials))
        asked = study.ask(space)
        _tell(study, _run(sweep, asked.number, asked.params))
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return [Trial(t.number, _overrides(t.params), t.value) for t in study.get_trials(deepcopy=False, states=done)]


def _optuna(sampler: str):
    """The optuna module, once the search can run: a known sampler, one process, optuna installed."""
    if sampler not in SAMPLERS:
        raise LlmkitError(f"--sampler: {sampler!r} is not one of {', '.join(SAMPLERS)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LlmkitError("--trials: an Optuna search runs in one process (each process would draw its own trials); "
                          "run it without torchrun / accelerate launch, or sweep a --grid under them")
    try:
        import optuna
    except ImportError:
        raise LlmkitError("--trials: an Optuna search needs optuna: pip install 'llmkit[optuna]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # llmkit says what each trial is and scores
    return optuna


def _study(sweep: Sweep, sampler: str, seed_offset: int):
    import optuna

    sampler_class = optuna.samplers.TPESampler if sampler == "tpe" else optuna.samplers.RandomSampler
    return optuna.create_study(storage=f"sqlite:///{(sweep.out / STORAGE).resolve()}", study_name=STUDY_NAME,
                               direction="minimize" if lower_is_better(sweep.metric) else "maximize",
                               sampler=sampler_class(seed=sweep.seed + seed_offset), load_if_exists=True)


def _run(sweep: Sweep, number: int, values: dict) -> Trial:
    params = _overrides(values)
    return sweep.run_trial(number, params, sweep.trial_config(number, params))


def _tell(study, trial: Trial) -> None:
    import optuna

    if trial.score is None:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial.number, trial.score)


def _overrides(values: dict) -> list[str]:
    """Optuna's values as overrides; JSON is YAML, so a string stays a string and a float a float."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def read_space(path: Path) -> dict:
    """{config key: Optuna distribution} from the YAML file."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LlmkitError(f"--space: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise LlmkitError(f"--space: cannot read {path}: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise LlmkitError(f"--space: {path}: expected config keys, each with a range {{low: ..., high: ...}} or a "
                          "list of choices")
    return {key: _distribution(str(key), value) for key, value in raw.items()}


def _distribution(key: str, value):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    check_key(key, "--space")
    if isinstance(value, list) and value and all(_is_scalar(choice) for choice in value):
        return CategoricalDistribution(value)
    if not isinstance(value, dict) or not {"low", "high"} <= set(value) or set(value) - RANGE_KEYS:
        raise LlmkitError(f"--space {key}: expected {{low: ..., high: ...}} (log: true for a log scale, step: a "
                          f"grid) or a list of choices (numbers, strings, true/false), got {value!r}")
    low, high = _number(key, value["low"]), _number(key, value["high"])
    log, step = value.get("log", False), value.get("step")
    if not isinstance(log, bool):
        raise LlmkitError(f"--space {key}: log is true or false, got {log!r}")
    try:
        if isinstance(low, int) and isinstance(high, int) and not isinstance(step, float):
            return IntDistribution(low, high, log=log, step=1 if step is None else step)
        return FloatDistribution(float(low), float(high), log=log, step=step)
    except (TypeError, ValueError) as e:  # Optuna's own checks: low <= high, log with low > 0, log or step
        raise LlmkitError(f"--space {key}: {e}") from None


def _number(key: str, value) -> int | float:
    """YAML 1.1 reads `1e-5` (no dot) as a string: take it as the number it says."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LlmkitError(f"--space {key}: low and high are numbers, got {value!r}") from None


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _probes(space: dict) -> list[list[str]]:
    """Overrides that set every key to its range's low end (or first choice), then to its high end (last choice)."""
    ends = {key: _ends(distribution) for key, distribution in space.items()}
    return [_overrides({key: pair[i] for key, pair in ends.items()}) for i in (0, 1)]


def _ends(distribution) -> tuple:
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[0], distribution.choices[-1]
    return distribution.low, distribution.high
