"""What the training loop keeps about a run: its state (saved in every checkpoint), its schedule, one step's
result, and the bookkeeping of evaluations (the best one, early stopping's patience)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any

from llmkit.config import TrainSection
from llmkit.seed_stats import lower_is_better


@dataclass
class TrainState:
    """Where a run is and what it has seen: trainer_state.json in every checkpoint and beside the final model."""

    global_step: int = 0
    total_steps: int = 0
    num_processes: int = 1
    seed: int = 0
    window: dict = field(default_factory=lambda: {"loss": 0.0, "steps": 0, "tokens": 0})  # the next log line's sums
    best_metric: float | None = None
    best_step: int | None = None
    best_checkpoint: str | None = None
    best_eval: dict = field(default_factory=dict)  # the scalar metrics of the best evaluation
    stale_evaluations: int = 0  # evaluations in a row without an improvement (early stopping)
    last_eval: dict = field(default_factory=dict)
    skipped_steps: int = 0
    finished: bool = False
    train_seconds: float = 0.0  # in the loop, resumed runs' time included
    stopped_by: str | None = None

    @classmethod
    def from_dict(cls, saved: dict) -> TrainState:
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


@dataclass
class Schedule:
    task_epochs: list[int]  # optimizer steps per epoch of each task
    total_steps: int
    warmup: int

    @property
    def per_epoch(self) -> int:
        return sum(self.task_epochs)


@dataclass
class StepResult:
    loss: float  # the global batch's mean loss
    grad_norm: float | None
    tokens: int  # input tokens of every process's micro-batches
    stop_requested: bool  # on any process (SIGINT / SIGTERM)
    out_of_time: bool  # any process's clock passed train.max_time: all stop at the same step

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and (self.grad_norm is None or math.isfinite(self.grad_norm))


@dataclass
class TrainResult:
    model: Any
    metrics: dict  # the last evaluation
    state: TrainState


class Clock:
    """Seconds in the training loop, counting on from `before` (the resumed runs' time)."""

    def __init__(self, before: float):
        self.started = time.perf_counter() - before

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def record_evaluation(state: TrainState, t: TrainSection, metrics: dict, step: int) -> None:
    """Keep the evaluation's scalars, the best step by train.metric_for_best_model, and how many evaluations
    in a row have not improved on the best by more than train.early_stopping_threshold."""
    from llmkit.errors import LlmkitError

    state.last_eval = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    name, greater = best_metric(t)
    value = metrics.get(name)
    if value is None:
        raise LlmkitError(f"train.metric_for_best_model: {t.metric_for_best_model!r} is not an evaluation "
                          f"metric here; there are {sorted(state.last_eval)}")
    gain = None if state.best_metric is None else (value - state.best_metric if greater else state.best_metric - value)
    state.stale_evaluations = 0 if gain is None or gain > t.early_stopping_threshold else state.stale_evaluations + 1
    if gain is None or gain > 0:
        state.best_metric, state.best_step, state.best_eval = value, step, state.last_eval


def best_metric(t: TrainSection) -> tuple[str, bool]:
    name = (t.metric_for_best_model or "loss").removeprefix("eval_")
    greater = t.greater_is_better if t.greater_is_better is not None else not lower_is_better(name)
    return name, greater
