from __future__ import annotations

import contextlib
import math
import shlex
import signal
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.checkpoint import load_checkpoint, load_weights, restore_rng, save_checkpoint
from llmkit.config import TrainSection
from llmkit.data.batching import StepPlan, example_lengths, steps_per_epoch
from llmkit.errors import InterruptedRun, LlmkitError, NonFiniteLossError
from llmkit.evaluation import evaluate_tasks
from llmkit.multitask import TaskForward
from llmkit.paths import split_key
from llmkit.runlog import RunLog, banner
from llmkit.train_state import Clock, Schedule, StepResult, TrainResult, TrainState, record_evaluation

if TYPE_CHECKING:
    from llmkit.resume import Verdict


@dataclass
class Task:
    """What a task brings to the loop. A single-task run has one, without a name."""

    objective: Any
    train_data: Any
    eval_data: Any = None
    name: str | None = None  # multi-task: the model is called, and metrics are named, by it
    proportion: float | None = None  # multi-task: share of the steps (default: its share of the batches)


def build_optimizer(model, train: TrainSection):
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if train.optim == "sgd":
        return torch.optim.SGD(groups, lr=train.learning_rate, momentum=train.sgd_momentum)
    kwargs = {"lr": train.learning_rate, "betas": (train.adam_beta1, train.adam_beta2), "eps": train.adam_epsilon}
    if train.optim in ("adamw", "adamw_torch_fused"):
        kwargs["fused"] = True  # one kernel per step instead of a chain of element-wise ops
    cls = torch.optim.AdamW if train.optim.startswith("adamw") else torch.optim.Adam
    return cls(groups, **kwargs)


@dataclass
class Loop:
    """What train sets up before its first step (`llmkit rehearse` sets up the same)."""

    model: Any  # prepared by Accelerate
    optimizer: Any
    scheduler: Any
    schedule: Schedule
    plan: StepPlan


def set_up(accelerator, model, tasks: list[Task], t: TrainSection, seed: int) -> Loop:
    """The schedule, optimizer, learning-rate schedule (stepped by hand once per optimizer step: total_steps
    already counts global steps), the prepared model and the step plan."""
    from transformers import get_scheduler

    processes = accelerator.num_processes
    schedule = plan_schedule(tasks, t, processes)
    optimizer = build_optimizer(model, t)
    scheduler = get_scheduler(t.lr_scheduler_type, optimizer, num_warmup_steps=schedule.warmup,
                              num_training_steps=schedule.total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    return Loop(model, optimizer, scheduler, schedule,
                step_plan(tasks, schedule, t, seed, processes, accelerator.process_index))


def train(accelerator, t: TrainSection, seed: int, model, tasks: list[Task], tokenizer, output_dir: Path,
          log: RunLog, fingerprint: dict, resume: Path | None = None, verdict: Verdict | None = None) -> TrainResult:
    """Run (or continue) the configured steps: set up, then per step train, log, and evaluate / save / stop.
    `fingerprint` goes into every checkpoint; `verdict` says how the checkpoint `resume` continues."""
    import torch

    from llmkit.cpu import FastDropout

    loop = set_up(accelerator, model, tasks, t, seed)
    model, optimizer, scheduler, schedule, plan = loop.model, loop.optimizer, loop.scheduler, loop.schedule, loop.plan
    state = TrainState(total_steps=schedule.total_steps, num_processes=accelerator.num_processes, seed=seed)
    if resume is not None:
        state = _resumed_state(accelerator, resume, verdict, optimizer, scheduler, log, state)
    banner(log, _banner_rows(accelerator, model, tasks, plan, schedule, t, state, resume))

    def save(step: int) -> Path:
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise NonFiniteLossError(f"step {step}: the weights hold NaN/inf; not saving them over the last checkpoint")
        if state.best_step == step:
            state.best_checkpoint = f"checkpoint-{step}"
        return save_checkpoint(accelerator, model, optimizer, scheduler, tokenizer, asdict(state), fingerprint,
                               output_dir, t.save_total_limit)

    progress = _Progress(schedule.total_steps, state.global_step, accelerator.is_main_process)
    has_eval = any(task.eval_data is not None for task in tasks)
    first_step, last_metrics, best_metrics = state.global_step, {}, {}
    clock = Clock(state.train_seconds)
    window_start = time.perf_counter()
    fast_dropout = accelerator.device.type == "cpu" and t.fast_dropout
    model.train()
    with _StopOnSignal() as stop, FastDropout() if fast_dropout else contextlib.nullcontext():
        for step in range(first_step, schedule.total_steps):
            k, task_epoch, micro_ids = plan(step)
            if resume is not None and step == first_step and not restore_rng(resume, accelerator.process_index):
                log.print(f"WARNING: {resume} has no RNG state for process {accelerator.process_index}; "
                          "dropout draws will differ")
            result = train_step(accelerator, model, tasks[k], micro_ids, task_epoch, t, stop.requested, clock)
            state.train_seconds = clock.seconds
            if result.finite:
                optimizer.step()
            elif t.on_nonfinite_loss == "stop":
                raise NonFiniteLossError(f"step {step + 1}: the loss is {result.loss} (gradient norm "
                                         f"{result.grad_norm}); stopped before updating the weights (lower "
                                         "train.learning_rate, or check the data)")
            else:
                state.skipped_steps += 1
                log.print(f"step {step + 1}: skipped (loss {result.loss}, gradient norm {result.grad_norm})")
                log.metrics({"step": step + 1, "skipped": "non-finite loss or gradient"})
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.global_step = step + 1
            progress.update()

            last = step + 1 == schedule.total_steps or result.out_of_time
            _add_to_window(state, result)
            if state.window["steps"] and (step + 1) % t.logging_steps == 0 or last:
                record = _log_line(state, step + 1, schedule, scheduler, result, time.perf_counter() - window_start)
                log.metrics(record)
                progress.show(record, schedule.total_steps)
                window_start = time.perf_counter()

            pause_start = time.perf_counter()
            if last and step + 1 < schedule.total_steps:
                state.stopped_by = "max_time"
                log.print(f"train.max_time {t.max_time} reached at step {step + 1} of {schedule.total_steps}")
            evaluated = has_eval and (last or is_due(t.eval_strategy, t.eval_steps, step, schedule))
            if evaluated:
                last_metrics = _evaluate(accelerator, model, tasks, t, state, log, step + 1, schedule.per_epoch)
                best_metrics = last_metrics if state.best_step == step + 1 else best_metrics
                last = last or _out_of_patience(t, state, log, step + 1)
            saved = save(step + 1) if not last and is_due(t.save_strategy, t.save_steps, step, schedule) else None
            if result.stop_requested and not last:
                saved = saved or save(step + 1)
                raise InterruptedRun(f"interrupted at step {step + 1} of {schedule.total_steps}; checkpoint saved in "
                                     f"{saved}. Resume with: {' '.join(shlex.quote(a) for a in sys.argv)} "
                                     "train.resume_from_checkpoint=latest")
            if evaluated or saved:
                window_start += time.perf_counter() - pause_start  # throughput counts training time only
            if last:
                break
    progress.close()
    state.finished = True
    if t.load_best_model_at_end and state.best_step not in (None, state.global_step):
        load_weights(accelerator, model, output_dir / state.best_checkpoint)
        log.print(f"train.load_best_model_at_end: the final model is {state.best_checkpoint}'s "
                  f"({t.metric_for_best_model or 'loss'} {state.best_metric:.4g})")
        return TrainResult(model, best_metrics or state.best_eval, state)
    return TrainResult(model, last_metrics or state.last_eval, state)


def _out_of_patience(t: TrainSection, state: TrainState, log: RunLog, step: int) -> bool:
    """Early stopping: train.early_stopping_patience evaluations in a row without an improvement."""
    if not t.early_stopping_patience or state.stale_evaluations < t.early_stopping_patience:
        return False
    state.stopped_by = "early_stopping"
    log.print(f"early stopping at step {step}: {t.metric_for_best_model or 'loss'} has not improved for "
              f"{state.stale_evaluations} evaluations (best {state.best_metric:.4g} at step {state.best_step})")
    return True


def train_step(accelerator, model, task: Task, micro_ids: list[list[int]], task_epoch: int, t: TrainSection,
          stop_requested: bool, clock: Clock) -> StepResult:
    """One optimizer step's forward and backward passes, and the clipped gradient norm (the update is the
    caller's). Each micro-batch's summed loss is divided by the global count of predicted items."""
    import torch

    objective, processes = task.objective, accelerator.num_processes
    forward = model if task.name is None else TaskForward(model, task.name)
    micro_batches = [{name: v.to(accelerator.device) for name, v in
                      objective.collate(task.train_data[ids], ids, task_epoch).items()} for ids in micro_ids]
    count = accelerator.reduce(torch.stack([objective.count(b) for b in micro_batches]).sum().double(), "sum")
    totals = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # loss, tokens, stop, out of time
    for i, batch in enumerate(micro_batches):
        # Gradients are all-reduced once, after the last micro-batch of the step.
        sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else accelerator.no_sync(model)
        with sync:
            loss_sum, _ = objective.loss(forward, batch)
            accelerator.backward(loss_sum * processes / count.clamp(min=1))
        totals[:2] += torch.stack([loss_sum.detach().double(), batch["attention_mask"].sum().double()])
    totals[2] = float(stop_requested)
    totals[3] = float(t.max_seconds is not None and clock.seconds >= t.max_seconds)
    totals = accelerator.reduce(totals, "sum")  # every process sees the same loss and stop request
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm) if t.max_grad_norm > 0 else None
    return StepResult(loss=(totals[0] / count.clamp(min=1)).item(),
                      grad_norm=None if grad_norm is None else float(grad_norm),
                      tokens=int(totals[1].item()), stop_requested=totals[2].item() > 0,
                      out_of_time=totals[3].item() > 0)


def plan_schedule(tasks: list[Task], t: TrainSection, processes: int) -> Schedule:
    accumulation = t.gradient_accumulation_steps
    task_epochs = [steps_per_epoch(len(task.train_data), t.per_device_train_batch_size, processes, accumulation)
                   for task in tasks]
    for task, steps in zip(tasks, task_epochs):
        if steps == 0:
            raise LlmkitError(f"{split_key('train', task.name)}: {len(task.train_data)} training examples cannot "
                              f"fill one step of {processes} processes x {accumulation} accumulation steps")
    total = t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.num_train_epochs * sum(task_epochs)))
    return Schedule(task_epochs, total, t.warmup_steps or math.ceil(t.warmup_ratio * total))


def step_plan(tasks: list[Task], schedule: Schedule, t: TrainSection, seed: int, processes: int,
              process_index: int) -> StepPlan:
    """Per optimizer step: the task it trains and this process's micro-batches (llmkit.data.batching)."""
    return StepPlan([len(task.train_data) for task in tasks], schedule.task_epochs,
                    [task.proportion or n for task, n in zip(tasks, schedule.task_epochs)], schedule.total_steps,
                    seed, t.per_device_train_batch_size, processes, process_index, t.gradient_accumulation_steps,
                    [example_lengths(task.train_data) if t.group_by_length else None for task in tasks])


def _resumed_state(accelerator, resume: Path, verdict: Verdict, optimizer, scheduler, log: RunLog,
                   fresh: TrainState) -> TrainState:
    """The checkpoint's state; exactly its optimizer and schedule, or, when the verdict re-plans, this config's."""
    if verdict.replans:
        saved = _replanned(accelerator, resume, optimizer, scheduler, verdict.keeps_optimizer_state)
    else:
        saved = load_checkpoint(accelerator, resume, optimizer, scheduler)
    state = TrainState.from_dict({**saved, "total_steps": fresh.total_steps, "num_processes": fresh.num_processes})
    _truncate_log(log, state.global_step)
    return state


def _replanned(accelerator, resume: Path, optimizer, scheduler, keep_optimizer_state: bool) -> dict:
    """The checkpoint's optimizer state (its moment estimates) under this config's hyperparameters, and the
    schedule this config plans (learning rate, type, warmup, total steps) at the checkpoint's step. Loading the
    saved state alone would bring back the old settings with it."""
    configured = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    saved = load_checkpoint(accelerator, resume, optimizer if keep_optimizer_state else None, None)
    for group, settings in zip(optimizer.param_groups, configured):
        group.update(settings)
    scheduler.last_epoch = saved["global_step"] - 1
    with warnings.catch_warnings():  # torch's "lr_scheduler.step() before optimizer.step()": this only positions it
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
    return saved


def _banner_rows(accelerator, model, tasks: list[Task], plan: StepPlan, schedule: Schedule, t: TrainSection,
                 state: TrainState, resume: Path | None) -> dict:
    processes, accumulation = accelerator.num_processes, t.gradient_accumulation_steps
    global_batch = t.per_device_train_batch_size * processes * accumulation
    return {
        **_example_counts(tasks, plan.tasks),
        "batch": f"{t.per_device_train_batch_size} per device x {processes} processes x {accumulation} "
                 f"accumulation = {global_batch}",
        "steps": f"{schedule.total_steps:,} ({schedule.per_epoch:,} per epoch, "
                 f"{schedule.total_steps / schedule.per_epoch:.2f} epochs), warmup {schedule.warmup}",
        "parameters": f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable "
                      f"of {sum(p.numel() for p in model.parameters()):,}",
        "precision": f"{accelerator.mixed_precision} on {accelerator.device}",
        **({"resumed": f"from {resume} at step {state.global_step:,}"} if resume is not None else {}),
    }


def _add_to_window(state: TrainState, result: StepResult) -> None:
    if result.finite:
        state.window["loss"] += result.loss
        state.window["steps"] += 1
    state.window["tokens"] += result.tokens


def _log_line(state: TrainState, step: int, schedule: Schedule, scheduler, result: StepResult,
              elapsed: float) -> dict:
    """The window's mean loss and throughput as one metrics.jsonl record; the window starts again."""
    window = state.window
    state.window = {"loss": 0.0, "steps": 0, "tokens": 0}
    return {"step": step, "epoch": round(step / schedule.per_epoch, 4),
            "loss": window["loss"] / max(window["steps"], 1), "learning_rate": scheduler.get_last_lr()[0],
            "grad_norm": result.grad_norm, "tokens_per_s": round(window["tokens"] / max(elapsed, 1e-9), 1)}


def is_due(strategy: str, every: int, step: int, schedule: Schedule) -> bool:
    """Whether an eval / save strategy (`steps` every N, `epoch` at each epoch's end) fires after `step`."""
    if strategy == "steps":
        return (step + 1) % every == 0
    return strategy == "epoch" and step % schedule.per_epoch == schedule.per_epoch - 1


def _evaluate(accelerator, model, tasks: list[Task], t: TrainSection, state: TrainState, log: RunLog, step: int,
              per_epoch: int) -> dict:
    """Evaluate, log it, and keep track of the best step by train.metric_for_best_model."""
    metrics = evaluate_tasks(accelerator, model, tasks, t.per_device_eval_batch_size)
    log.metrics({"step": step, "epoch": round(step / per_epoch, 4), **{f"eval_{k}": v for k, v in metrics.items()}})
    log.print(f"step {step}: eval " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    record_evaluation(state, t, metrics, step)
    return metrics


def _example_counts(tasks: list[Task], schedule) -> dict[str, str]:
    lines = {}
    for k, task in enumerate(tasks):
        validation = len(task.eval_data) if task.eval_data is not None else 0
        line = f"{len(task.train_data):,} train, {validation:,} validation"
        if task.name is None:
            lines["examples"] = line
        else:
            lines[f"examples ({task.name})"] = f"{line}, {(schedule == k).mean():.0%} of the steps"
    return lines


def _truncate_log(log: RunLog, step: int) -> None:
    """Drop log lines written after the checkpoint, so the resumed run's log reads as one run's."""
    import json

    if log.is_main and log.path.exists():
        kept = [line for line in log.path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        log.path.write_text("".join(line + "\n" for line in kept))


class _StopOnSignal:
    """SIGINT / SIGTERM ask the loop to finish the step, save a checkpoint and exit 130; a second one
    stops at once. (Handlers can only be set from the main thread; elsewhere signals keep their default.)"""

    def __init__(self):
        self.requested = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _Progress:
    """A tqdm bar on an interactive terminal (main process); plain log lines otherwise."""

    def __init__(self, total: int, start: int, is_main: bool):
        self.is_main = is_main
        self.bar = None
        if is_main and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self) -> None:
        if self.bar:
            self.bar.update(1)

    def show(self, record: dict, total: int) -> None:
        if self.bar:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
        elif self.is_main:
            print(f"step {record['step']}/{total}: loss {record['loss']:.4f}, lr {record['learning_rate']:.3g}, "
                  f"{record['tokens_per_s']:.0f} tokens/s", flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
