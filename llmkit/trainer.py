"""The one training loop, shared by pretraining and fine-tuning; the objective says what is learnt.

Per optimizer step: collate this process's micro-batches, count the predicted items (masked tokens,
examples) over all processes and micro-batches, then backpropagate each micro-batch's *summed* loss
divided by that global count. The gradient is then exactly that of the mean over the whole global
batch, however it is split over processes and accumulation steps (a mean of per-process means is
not: it weights short batches more).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path

from llmkit.checkpoint import save_checkpoint
from llmkit.config import TrainSection
from llmkit.data.batching import epoch_plan, steps_per_epoch
from llmkit.errors import LlmkitError, NonFiniteLossError
from llmkit.evaluation import evaluate
from llmkit.runlog import RunLog, banner


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


def train(accelerator, cfg, model, objective, train_data, eval_data, tokenizer, output_dir: Path, log: RunLog) -> dict:
    """Run the configured number of steps; returns the last evaluation's metrics (or {})."""
    import torch
    from transformers import get_scheduler

    t = cfg.train
    processes, rank, accumulation = accelerator.num_processes, accelerator.process_index, t.gradient_accumulation_steps
    per_epoch = steps_per_epoch(len(train_data), t.per_device_train_batch_size, processes, accumulation)
    if per_epoch == 0:
        raise LlmkitError(f"data.train_file: {len(train_data)} training examples cannot fill one step of "
                          f"{processes} processes x {accumulation} accumulation steps")
    total_steps = t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.num_train_epochs * per_epoch))
    warmup = t.warmup_steps or math.ceil(t.warmup_ratio * total_steps)

    optimizer = build_optimizer(model, t)
    scheduler = get_scheduler(t.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    # The scheduler is stepped by hand once per optimizer step: total_steps already counts global steps.
    model, optimizer = accelerator.prepare(model, optimizer)

    global_batch = t.per_device_train_batch_size * processes * accumulation
    banner(log, {
        "examples": f"{len(train_data):,} train, {len(eval_data) if eval_data is not None else 0:,} validation",
        "batch": f"{t.per_device_train_batch_size} per device x {processes} processes x {accumulation} accumulation = {global_batch}",
        "steps": f"{total_steps:,} ({per_epoch:,} per epoch, {total_steps / per_epoch:.2f} epochs), warmup {warmup}",
        "parameters": f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable "
                      f"of {sum(p.numel() for p in model.parameters()):,}",
        "precision": f"{accelerator.mixed_precision} on {accelerator.device}",
    })

    def eval_now() -> dict:
        if eval_data is None:
            return {}
        metrics = evaluate(accelerator, model, objective, eval_data, t.per_device_eval_batch_size)
        log.metrics({"step": step + 1, "epoch": round((step + 1) / per_epoch, 4),
                     **{f"eval_{k}": v for k, v in metrics.items()}})
        log.print(f"step {step + 1}: eval " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                                         if isinstance(v, float)))
        return metrics

    progress = _progress(total_steps, accelerator.is_main_process)
    plan, plan_epoch, last_metrics = None, None, {}
    window = {"loss": 0.0, "steps": 0, "tokens": 0, "start": time.perf_counter()}
    model.train()
    for step in range(total_steps):
        epoch, step_in_epoch = divmod(step, per_epoch)
        if plan_epoch != epoch:
            plan = epoch_plan(len(train_data), cfg.seed, epoch, t.per_device_train_batch_size, processes, rank,
                              accumulation)
            plan_epoch = epoch
        micro_batches = [
            {k: v.to(accelerator.device) for k, v in objective.collate(train_data[ids], ids, epoch).items()}
            for ids in plan[step_in_epoch]
        ]
        count = accelerator.reduce(torch.stack([objective.count(b) for b in micro_batches]).sum().double(), "sum")
        totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # loss sum, input tokens
        for i, batch in enumerate(micro_batches):
            # Gradients are all-reduced once, after the last micro-batch of the step.
            sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else accelerator.no_sync(model)
            with sync:
                loss_sum, _ = objective.loss(model, batch)
                accelerator.backward(loss_sum * processes / count.clamp(min=1))
            totals += torch.stack([loss_sum.detach().double(), batch["attention_mask"].sum().double()])
        totals = accelerator.reduce(totals, "sum")
        loss = (totals[0] / count.clamp(min=1)).item()
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"step {step + 1}: the loss is {loss}; stopped before updating the weights "
                                     "(lower train.learning_rate, or check the data)")
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm) if t.max_grad_norm > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        window["loss"] += loss
        window["steps"] += 1
        window["tokens"] += int(totals[1].item())
        progress.update(1)
        if (step + 1) % t.logging_steps == 0 or step + 1 == total_steps:
            elapsed = time.perf_counter() - window["start"]
            record = {"step": step + 1, "epoch": round((step + 1) / per_epoch, 4),
                      "loss": window["loss"] / window["steps"], "learning_rate": scheduler.get_last_lr()[0],
                      "grad_norm": None if grad_norm is None else float(grad_norm),
                      "tokens_per_s": round(window["tokens"] / max(elapsed, 1e-9), 1)}
            log.metrics(record)
            progress.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if not progress.interactive:
                log.print(f"step {step + 1}/{total_steps}: loss {record['loss']:.4f}, "
                          f"lr {record['learning_rate']:.3g}, {record['tokens_per_s']:.0f} tokens/s")
            window = {"loss": 0.0, "steps": 0, "tokens": 0, "start": time.perf_counter()}

        end_of_epoch = step_in_epoch == per_epoch - 1
        last = step + 1 == total_steps
        if last or (t.eval_strategy == "steps" and (step + 1) % t.eval_steps == 0) or (
                t.eval_strategy == "epoch" and end_of_epoch):
            last_metrics = eval_now()
            window["start"] = time.perf_counter()  # throughput counts training time only
        if not last and ((t.save_strategy == "steps" and (step + 1) % t.save_steps == 0) or (
                t.save_strategy == "epoch" and end_of_epoch)):
            state = {"global_step": step + 1, "epoch": epoch, "step_in_epoch": step_in_epoch + 1,
                     "total_steps": total_steps, "seed": cfg.seed, "last_eval": _scalars(last_metrics)}
            save_checkpoint(accelerator, model, optimizer, scheduler, tokenizer, state, output_dir, t.save_total_limit)
            window["start"] = time.perf_counter()
    progress.close()
    return {"model": model, "metrics": last_metrics, "steps": total_steps}


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


class _progress:
    """A tqdm bar on an interactive terminal (main process); plain log lines otherwise."""

    def __init__(self, total: int, is_main: bool):
        self.interactive = is_main and sys.stderr.isatty()
        self.bar = None
        if self.interactive:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar:
            self.bar.update(n)

    def set_postfix(self, **kwargs) -> None:
        if self.bar:
            self.bar.set_postfix(**kwargs)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
