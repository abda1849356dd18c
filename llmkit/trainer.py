"""The one training loop, shared by pretraining and fine-tuning; the objective says what is learnt.

Per optimizer step: collate this process's micro-batches, count the predicted items (masked tokens,
examples) over all processes and micro-batches, then backpropagate each micro-batch's *summed* loss
divided by that global count. The gradient is then exactly that of the mean over the whole global
batch, however it is split over processes and accumulation steps (a mean of per-process means is
not: it weights short batches more).

Resuming is exact: the data order is a function of (seed, epoch), masks of (seed, epoch, example),
so step N is reached in O(1); the torch/numpy/python RNG states saved with the checkpoint are put
back just before the first resumed step, so dropout draws continue as if never interrupted.

Multi-task runs bring one Task per dataset: each step trains one task, drawn by its proportion
(again a pure function of the seed and the step), through that task's objective and head.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from llmkit.config import TrainSection
from llmkit.data.batching import StepPlan, example_lengths, steps_per_epoch
from llmkit.errors import InterruptedRun, LlmkitError, NonFiniteLossError
from llmkit.evaluation import evaluate_tasks
from llmkit.runlog import RunLog, banner
from llmkit.wrappers import TaskForward


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


def train(accelerator, cfg, model, tasks: list[Task], tokenizer, output_dir: Path, log: RunLog,
          resume: Path | None = None) -> dict:
    """Run (or continue) the configured steps; returns the model, the last evaluation and the state."""
    import torch
    from transformers import get_scheduler

    from llmkit.cpu import FastDropout, keep_freed_memory

    t = cfg.train
    processes, rank, accumulation = accelerator.num_processes, accelerator.process_index, t.gradient_accumulation_steps
    task_epochs = [steps_per_epoch(len(task.train_data), t.per_device_train_batch_size, processes, accumulation)
                   for task in tasks]
    for task, steps in zip(tasks, task_epochs):
        if steps == 0:
            key = f"finetune.tasks.{task.name}.data.train_file" if task.name else "data.train_file"
            raise LlmkitError(f"{key}: {len(task.train_data)} training examples cannot fill one step of "
                              f"{processes} processes x {accumulation} accumulation steps")
    per_epoch = sum(task_epochs)
    total_steps = t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.num_train_epochs * per_epoch))
    warmup = t.warmup_steps or math.ceil(t.warmup_ratio * total_steps)

    optimizer = build_optimizer(model, t)
    scheduler = get_scheduler(t.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    # The scheduler is stepped by hand once per optimizer step: total_steps already counts global steps.
    model, optimizer = accelerator.prepare(model, optimizer)

    state = {"global_step": 0, "total_steps": total_steps, "num_processes": processes, "seed": cfg.seed,
             "window": {"loss": 0.0, "steps": 0, "tokens": 0}, "best_metric": None, "best_step": None,
             "best_checkpoint": None, "last_eval": {}, "skipped_steps": 0, "finished": False,
             "train_seconds": 0.0, "stopped_by": None}
    if resume is not None:
        state.update(load_checkpoint(accelerator, resume, optimizer, scheduler), total_steps=total_steps)
        _truncate_log(log, state["global_step"])
        if state["num_processes"] != processes:
            log.print(f"WARNING: the checkpoint was written by {state['num_processes']} processes, this run has "
                      f"{processes}; training continues but not bitwise as the original run would have")
            state["num_processes"] = processes

    plan = StepPlan([len(task.train_data) for task in tasks], task_epochs,
                    [task.proportion or n for task, n in zip(tasks, task_epochs)], total_steps, cfg.seed,
                    t.per_device_train_batch_size, processes, rank, accumulation,
                    [example_lengths(task.train_data) if t.group_by_length else None for task in tasks])
    global_batch = t.per_device_train_batch_size * processes * accumulation
    banner(log, {
        **_example_counts(tasks, plan.tasks),
        "batch": f"{t.per_device_train_batch_size} per device x {processes} processes x {accumulation} accumulation = {global_batch}",
        "steps": f"{total_steps:,} ({per_epoch:,} per epoch, {total_steps / per_epoch:.2f} epochs), warmup {warmup}",
        "parameters": f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable "
                      f"of {sum(p.numel() for p in model.parameters()):,}",
        "precision": f"{accelerator.mixed_precision} on {accelerator.device}",
        **({"resumed": f"from {resume} at step {state['global_step']:,}"} if resume is not None else {}),
    })

    last_metrics = {}

    def eval_now(step: int) -> None:
        nonlocal last_metrics
        metrics = last_metrics = evaluate_tasks(accelerator, model, tasks, t.per_device_eval_batch_size)
        log.metrics({"step": step, "epoch": round(step / per_epoch, 4), **{f"eval_{k}": v for k, v in metrics.items()}})
        log.print(f"step {step}: eval " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        state["last_eval"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        name, greater = _best_metric(t)
        value = metrics.get(name)
        if value is None:
            raise LlmkitError(f"train.metric_for_best_model: {t.metric_for_best_model!r} is not an evaluation "
                              f"metric here; there are {sorted(state['last_eval'])}")
        if state["best_metric"] is None or (value > state["best_metric"] if greater else value < state["best_metric"]):
            state["best_metric"], state["best_step"] = value, step

    def save_now(step: int) -> Path:
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise NonFiniteLossError(f"step {step}: the weights hold NaN/inf; not saving them over the last checkpoint")
        if state["best_step"] == step:
            state["best_checkpoint"] = f"checkpoint-{step}"
        return save_checkpoint(accelerator, model, optimizer, scheduler, tokenizer, state, output_dir,
                               t.save_total_limit)

    progress = _Progress(total_steps, state["global_step"], accelerator.is_main_process)
    has_eval = any(task.eval_data is not None for task in tasks)
    first_step = state["global_step"]
    budget = t.max_seconds
    clock = time.perf_counter() - state["train_seconds"]  # training time so far includes the resumed runs'
    window_start = time.perf_counter()
    on_cpu = accelerator.device.type == "cpu"
    if on_cpu:
        keep_freed_memory()
    model.train()
    with _StopOnSignal() as stop, FastDropout() if on_cpu and t.fast_dropout else contextlib.nullcontext():
        for step in range(first_step, total_steps):
            epoch, step_in_epoch = divmod(step, per_epoch)
            k, task_epoch, micro_ids = plan(step)
            task = tasks[k]
            forward = model if task.name is None else TaskForward(model, task.name)
            if resume is not None and step == first_step and not restore_rng(resume, rank):
                log.print(f"WARNING: {resume} has no RNG state for process {rank}; dropout draws will differ")
            micro_batches = [
                {name: v.to(accelerator.device)
                 for name, v in task.objective.collate(task.train_data[ids], ids, task_epoch).items()}
                for ids in micro_ids
            ]
            count = accelerator.reduce(torch.stack([task.objective.count(b) for b in micro_batches]).sum().double(),
                                       "sum")
            # loss sum, input tokens, stop requested, out of time
            totals = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
            for i, batch in enumerate(micro_batches):
                # Gradients are all-reduced once, after the last micro-batch of the step.
                sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else accelerator.no_sync(model)
                with sync:
                    loss_sum, _ = task.objective.loss(forward, batch)
                    accelerator.backward(loss_sum * processes / count.clamp(min=1))
                totals[:2] += torch.stack([loss_sum.detach().double(), batch["attention_mask"].sum().double()])
            totals[2] = float(stop.requested)
            state["train_seconds"] = time.perf_counter() - clock
            totals[3] = float(budget is not None and state["train_seconds"] >= budget)
            totals = accelerator.reduce(totals, "sum")  # every process sees the same loss and stop request
            loss = (totals[0] / count.clamp(min=1)).item()
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm) if t.max_grad_norm > 0 else None
            finite = math.isfinite(loss) and (grad_norm is None or math.isfinite(float(grad_norm)))
            if finite:
                optimizer.step()
            elif t.on_nonfinite_loss == "stop":
                raise NonFiniteLossError(f"step {step + 1}: the loss is {loss} (gradient norm {grad_norm}); stopped "
                                         "before updating the weights (lower train.learning_rate, or check the data)")
            else:
                state["skipped_steps"] += 1
                log.print(f"step {step + 1}: skipped (loss {loss}, gradient norm {grad_norm})")
                log.metrics({"step": step + 1, "skipped": "non-finite loss or gradient"})
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["global_step"] = step + 1
            progress.update()

            window = state["window"]
            if finite:
                window["loss"] += loss
                window["steps"] += 1
            window["tokens"] += int(totals[1].item())
            last = step + 1 == total_steps or totals[3] > 0  # any process's clock: all stop at the same step
            if window["steps"] and (step + 1) % t.logging_steps == 0 or last:
                elapsed = time.perf_counter() - window_start
                record = {"step": step + 1, "epoch": round((step + 1) / per_epoch, 4),
                          "loss": window["loss"] / max(window["steps"], 1), "learning_rate": scheduler.get_last_lr()[0],
                          "grad_norm": None if grad_norm is None else float(grad_norm),
                          "tokens_per_s": round(window["tokens"] / max(elapsed, 1e-9), 1)}
                log.metrics(record)
                progress.show(record, total_steps)
                state["window"] = {"loss": 0.0, "steps": 0, "tokens": 0}
                window_start = time.perf_counter()

            pause_start = time.perf_counter()
            if last and step + 1 < total_steps:
                state["stopped_by"] = "max_time"
                log.print(f"train.max_time {t.max_time} reached at step {step + 1} of {total_steps}")
            end_of_epoch = step_in_epoch == per_epoch - 1
            evaluated = has_eval and (last or (t.eval_strategy == "steps" and (step + 1) % t.eval_steps == 0)
                                      or (t.eval_strategy == "epoch" and end_of_epoch))
            if evaluated:
                eval_now(step + 1)
            saved = None
            if not last and ((t.save_strategy == "steps" and (step + 1) % t.save_steps == 0) or (
                    t.save_strategy == "epoch" and end_of_epoch)):
                saved = save_now(step + 1)
            if totals[2] > 0 and not last:
                saved = saved or save_now(step + 1)
                command = " ".join(shlex.quote(a) for a in sys.argv)
                raise InterruptedRun(f"interrupted at step {step + 1} of {total_steps}; checkpoint saved in {saved}. "
                                     f"Resume with: {command} train.resume_from_checkpoint=latest")
            if evaluated or saved:
                window_start += time.perf_counter() - pause_start  # throughput counts training time only
            if last:
                break
    progress.close()
    state["finished"] = True
    return {"model": model, "metrics": last_metrics or state["last_eval"], "state": state}


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


def _best_metric(t: TrainSection) -> tuple[str, bool]:
    name = (t.metric_for_best_model or "loss").removeprefix("eval_")
    greater = t.greater_is_better if t.greater_is_better is not None else not (
        name.endswith("loss") or name.endswith("perplexity"))
    return name, greater


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
