"""`llmkit rehearse CONFIG [key=value ...]`: a short dry run of a training config on the real launcher and devices,
before the run itself spends its hours.

    llmkit rehearse configs/finetune/sst2.yaml
    torchrun --nproc_per_node 2 -m llmkit rehearse configs/tiny/pretrain.yaml --steps 3

Phases, each failing with its name past --phase-timeout: the data and the model, built as the stage builds them;
--steps training steps on the longest batches (the most tokens: the worst case for memory), then as many on the
run's own first batches; one evaluation over the validation data (data.max_eval_samples bounds it); a checkpoint
saved and loaded into a fresh model and optimizer as a resumed run loads it, compared bitwise; the final model,
card and report written as the run writes them; a barrier on every rank. It prints each process's peak memory,
tokens/s, the padding share, and the ETA of the configured run (how: llmkit.rehearsal). It writes only into a
temporary folder, removed at the end: output_dir is never touched.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from llmkit.checkpoint import load_checkpoint, save_checkpoint, save_final
from llmkit.config import Config
from llmkit.config.training import duration_seconds
from llmkit.console import MIB, format_duration, say
from llmkit.data.batching import example_lengths
from llmkit.data.files import first_rows
from llmkit.errors import LlmkitError
from llmkit.evaluation import evaluate_tasks
from llmkit.launch import end_run
from llmkit.rehearsal import (PLAN_SAMPLE_STEPS, Estimate, TimedStep, peak_memory, process_age,
                              step_seconds, synchronize, time_limit)
from llmkit.report import write_report
from llmkit.resume import fingerprint
from llmkit.runlog import RunLog
from llmkit.stages import finetune, pretrain
from llmkit.stages.common import make_accelerator, write_cards, write_results
from llmkit.train_state import Clock, TrainState
from llmkit.trainer import Loop, build_optimizer, is_due, set_up, train_step



@dataclass
class Rehearsal:
    """What the rehearsal measured (this process's view; the report is the main process's)."""

    startup: float
    seconds: dict[str, float] = field(default_factory=dict)  # per phase
    steps: dict[str, int] = field(default_factory=dict)  # steps taken, per kind of batches
    timed: list[TimedStep] = field(default_factory=list)
    padding: dict[str, float] = field(default_factory=dict)  # padding's share of the tokens computed, per kind
    evaluated: int = 0  # validation examples
    tensors_compared: int = 0
    peaks: list[dict[str, int]] = field(default_factory=list)  # per process
    step_seconds: float = 0.0
    mean_padded: float = 0.0
    estimate: Estimate | None = None


class Phases:
    """Each phase under the time limit, its seconds recorded in the rehearsal."""

    def __init__(self, rehearsal: Rehearsal, limit: float, cleanup):
        self.rehearsal, self.limit, self.cleanup = rehearsal, limit, cleanup

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        with time_limit(name, self.limit, self.cleanup):
            yield
        self.rehearsal.seconds[name] = time.perf_counter() - start


def run(cfg: Config, config_path: str, steps: int = 5, phase_timeout: str = "10m") -> Rehearsal:
    """Rehearse `cfg` in a temporary copy of it (output_dir in a temporary folder) and print the report."""
    from llmkit.cpu import keep_freed_memory

    try:
        limit = duration_seconds(phase_timeout)
    except ValueError as e:
        raise LlmkitError(f"--phase-timeout: {e}") from None
    accelerator = make_accelerator(cfg)
    if accelerator.device.type == "cpu":
        keep_freed_memory()  # as a training run does (stages.common.begin_training)
    work = _work_folder(accelerator)
    rehearsal = Rehearsal(startup=process_age())  # what the run, too, spends before it reads its data
    phases = Phases(rehearsal, limit, cleanup=lambda: _remove(work, accelerator))
    try:
        _rehearse(cfg.model_copy(update={"output_dir": str(work)}), accelerator, steps, phases)
    finally:
        _remove(work, accelerator)
    say("\n".join(_report(rehearsal, config_path, accelerator)))
    end_run(accelerator)  # every process at once (llmkit.launch)
    return rehearsal


def _work_folder(accelerator) -> Path:
    """One temporary folder for every process: the main one creates it and tells the others."""
    from accelerate.utils import broadcast_object_list

    name = [tempfile.mkdtemp(prefix="llmkit-rehearse-") if accelerator.is_main_process else None]
    return Path(broadcast_object_list(name)[0])


def _remove(work: Path, accelerator) -> None:
    if accelerator.is_main_process:
        shutil.rmtree(work, ignore_errors=True)


def _rehearse(cfg: Config, accelerator, steps: int, phases: Phases) -> None:
    stage = pretrain if cfg.pretrain is not None else finetune
    rehearsal, out = phases.rehearsal, Path(cfg.output_dir)
    with phases("data"):
        tasks, tokenizer = stage.build_tasks(cfg, accelerator)
    with phases("model"):
        model = stage.model_to_train(cfg, tasks, tokenizer)
    with phases("set-up"):
        loop = set_up(accelerator, model, tasks, cfg.train, cfg.seed)
    lengths = [example_lengths(task.train_data) for task in tasks]
    run_steps = [loop.plan(step) for step in range(min(loop.schedule.total_steps, PLAN_SAMPLE_STEPS))]
    rehearsed = [("longest", k, 0, micro_ids) for k in range(len(tasks)) for micro_ids in
                 longest_steps(lengths[k], steps, cfg.train, accelerator.num_processes, accelerator.process_index)]
    rehearsed += [("typical", *step) for step in run_steps[:steps]]
    rehearsal.steps = {kind: sum(step[0] == kind for step in rehearsed) for kind in ("longest", "typical")}
    log = RunLog(out, accelerator.is_main_process)
    with phases("training steps"):
        rehearsal.timed = _train(accelerator, loop, tasks, rehearsed, lengths, cfg.train, log)
    rehearsal.padding = _padding_shares(accelerator, rehearsal.timed)
    metrics = _evaluate(accelerator, loop.model, tasks, cfg.train, log, len(rehearsed), phases)
    state = TrainState(global_step=len(rehearsed), total_steps=loop.schedule.total_steps,
                       num_processes=accelerator.num_processes, seed=cfg.seed, last_eval=metrics)
    with phases("checkpoint save"):
        folder = save_checkpoint(accelerator, loop.model, loop.optimizer, loop.scheduler, tokenizer, asdict(state),
                                 fingerprint(cfg, accelerator.num_processes), out, None)
    with phases("checkpoint reload"):
        rehearsal.tensors_compared = _reload_and_compare(accelerator, stage, cfg, tasks, tokenizer, loop, folder)
    with phases("final save"):
        _write_final(accelerator, cfg, stage.__name__.rsplit(".", 1)[-1], loop.model, tasks, tokenizer, state,
                     metrics)
    with phases("barrier"):
        accelerator.wait_for_everyone()
    rehearsal.peaks = _gather(accelerator, peak_memory(accelerator.device))
    rehearsal.mean_padded = float(np.mean([_padded(lengths[k], micro_ids) for k, _, micro_ids in run_steps]))
    rehearsal.step_seconds = step_seconds(rehearsal.timed, rehearsal.mean_padded)
    rehearsal.estimate = _estimate(cfg, loop.schedule, rehearsal, any(task.eval_data is not None for task in tasks))


def longest_steps(lengths: np.ndarray, steps: int, t, processes: int, process_index: int) -> list[list[list[int]]]:
    """This process's micro-batches for `steps` optimizer steps over the longest examples, longest first, cut as
    the loop cuts a global batch (micro-batch j of process r is piece j x processes + r; llmkit.data.batching).
    When the steps need more examples than there are, the longest come round again."""
    accumulation = t.gradient_accumulation_steps
    global_batch = t.per_device_train_batch_size * processes * accumulation
    order = np.resize(np.argsort(-lengths, kind="stable"), steps * global_batch)
    plan = []
    for step in range(steps):
        pieces = np.array_split(order[step * global_batch:(step + 1) * global_batch], processes * accumulation)
        plan.append([pieces[j * processes + process_index].tolist() for j in range(accumulation)])
    return plan


def _train(accelerator, loop: Loop, tasks, rehearsed, lengths, t, log: RunLog) -> list[TimedStep]:
    """The rehearsed steps as the loop takes them (train_step, then the update), each timed but the first, which
    pays one-off costs (allocations, lazy initialisation) that the run pays once."""
    from llmkit.cpu import FastDropout

    timed, clock, optimizer, scheduler = [], Clock(0.0), loop.optimizer, loop.scheduler
    loop.model.train()
    fast_dropout = accelerator.device.type == "cpu" and t.fast_dropout
    with FastDropout() if fast_dropout else contextlib.nullcontext():
        for i, (batches, k, task_epoch, micro_ids) in enumerate(rehearsed):
            start = time.perf_counter()
            result = train_step(accelerator, loop.model, tasks[k], micro_ids, task_epoch, t, False, clock)
            if result.finite:  # a rehearsal reports the loss; it does not stop on it
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(accelerator.device)
            seconds = time.perf_counter() - start
            log.metrics({"step": i + 1, "loss": result.loss, "learning_rate": scheduler.get_last_lr()[0],
                         "grad_norm": result.grad_norm, "tokens_per_s": round(result.tokens / seconds, 1)})
            if i > 0:
                tokens = sum(int(lengths[k][ids].sum()) for ids in micro_ids)
                timed.append(TimedStep(batches, _padded(lengths[k], micro_ids), tokens, seconds, result.tokens))
    return timed


def _padded(lengths: np.ndarray, micro_ids: list[list[int]]) -> int:
    """Tokens a step computes: each micro-batch is padded to its longest example."""
    return sum(len(ids) * int(lengths[ids].max()) for ids in micro_ids if ids)


def _padding_shares(accelerator, timed: list[TimedStep]) -> dict[str, float]:
    """Per kind of batches, the share of the computed tokens that are padding, over every process."""
    import torch

    kinds = sorted({step.batches for step in timed})
    sums = torch.tensor([[sum(s.tokens for s in timed if s.batches == kind), sum(s.padded for s in timed
                                                                                 if s.batches == kind)]
                         for kind in kinds], dtype=torch.float64, device=accelerator.device).reshape(-1, 2)
    sums = accelerator.reduce(sums, "sum")
    return {kind: 1 - (tokens / padded).item() for kind, (tokens, padded) in zip(kinds, sums) if padded > 0}


def _evaluate(accelerator, model, tasks, t, log: RunLog, step: int, phases: Phases) -> dict:
    """One evaluation pass over the validation data, when the config has any. A pass over one batch first
    pays the one-off costs (the metric libraries' imports, first allocations), so they are counted once."""
    if all(task.eval_data is None for task in tasks):
        return {}
    one_batch = [replace(task, eval_data=first_rows(task.eval_data, t.per_device_eval_batch_size))
                 if task.eval_data is not None else task for task in tasks]
    with phases("first evaluation batch"):
        evaluate_tasks(accelerator, model, one_batch, t.per_device_eval_batch_size)
    with phases("evaluation"):
        metrics = evaluate_tasks(accelerator, model, tasks, t.per_device_eval_batch_size)
    phases.rehearsal.evaluated = sum(len(task.eval_data) for task in tasks if task.eval_data is not None)
    log.metrics({"step": step, **{f"eval_{k}": v for k, v in metrics.items()}})
    return metrics


def _reload_and_compare(accelerator, stage, cfg: Config, tasks, tokenizer, loop: Loop, folder: Path) -> int:
    """Load the checkpoint into a fresh model and optimizer as a resumed run does, and compare every weight and
    optimizer state with the trained one's, bitwise; returns how many tensors were compared."""
    import torch

    fresh = stage.model_to_train(cfg, tasks, tokenizer, resume=folder)
    fresh_optimizer = build_optimizer(fresh, cfg.train)
    load_checkpoint(accelerator, folder, fresh_optimizer, None)
    trained = _tensors(accelerator.unwrap_model(loop.model).state_dict(), loop.optimizer.state_dict())
    loaded = _tensors(fresh.state_dict(), fresh_optimizer.state_dict())
    differ = sorted(name for name in trained.keys() | loaded.keys() if name not in trained or name not in loaded
                    or not torch.equal(trained[name].cpu(), loaded[name].cpu()))
    if differ:
        raise LlmkitError(f"rehearse: the checkpoint does not load back as it was saved: {len(differ)} of "
                          f"{len(trained)} tensors differ ({', '.join(differ[:3])})")
    return len(trained)


def _tensors(weights: dict, optimizer_state: dict) -> dict:
    import torch

    moments = {f"optimizer.{index}.{key}": torch.as_tensor(value)
               for index, state in optimizer_state["state"].items() for key, value in state.items()}
    return {**weights, **moments}


def _write_final(accelerator, cfg: Config, stage_name: str, model, tasks, tokenizer, state: TrainState,
                 metrics: dict) -> None:
    """What the run writes at its end (stages.common): the final model, its results, card and report."""
    out = Path(cfg.output_dir)
    save_final(accelerator, model, tokenizer, out, asdict(state))
    if accelerator.is_main_process:
        if metrics:
            write_results(out / "eval_results.json", {"split": "validation", **metrics})
        write_cards(cfg, stage_name, tasks, metrics)
        write_report(out)


def _gather(accelerator, value) -> list:
    from accelerate.utils import gather_object

    return gather_object([value]) if accelerator.num_processes > 1 else [value]


def _estimate(cfg: Config, schedule, rehearsal: Rehearsal, has_eval: bool) -> Estimate:
    """The configured run's time, part by part (llmkit.rehearsal), counting its evaluations and saves as
    trainer.train decides them."""
    t, total, seconds = cfg.train, schedule.total_steps, rehearsal.seconds
    # The loop evaluates when due and after the last step, and saves when due but not after the last step.
    due_evaluations = sum(is_due(t.eval_strategy, t.eval_steps, s, schedule) for s in range(total - 1))
    evaluations = 1 + due_evaluations if has_eval else 0
    saves = sum(is_due(t.save_strategy, t.save_steps, s, schedule) for s in range(total - 1))
    training = total * rehearsal.step_seconds
    estimate = Estimate(total, {"start-up": rehearsal.startup, "data": seconds["data"], "model": seconds["model"],
                                "set-up": seconds["set-up"], "training": min(training, t.max_seconds or training)})
    if evaluations:
        estimate.parts[_count(evaluations, "evaluation")] = seconds["first evaluation batch"] + evaluations * seconds[
            "evaluation"]
    if saves:
        estimate.parts[_count(saves, "checkpoint")] = saves * seconds["checkpoint save"]
    estimate.parts["final save, card and report"] = seconds["final save"]
    return estimate


def _report(r: Rehearsal, config_path: str, accelerator) -> list[str]:
    def per_kind(values: dict[str, float], form: str) -> str:
        return ", ".join(f"{form.format(value)} {kind}" for kind, value in values.items()) or "not timed"

    rates = {kind: sum(s.all_tokens for s in steps) / sum(s.seconds for s in steps)
             for kind in ("longest", "typical") if (steps := [s for s in r.timed if s.batches == kind])}
    memory = ", ".join(f"rank {rank} " + ", ".join(f"{size / MIB:,.0f} MiB {what}" for what, size in peaks.items())
                       for rank, peaks in enumerate(r.peaks))
    evaluation = (f"{r.evaluated:,} examples in {format_duration(r.seconds['evaluation'])}" if "evaluation" in r.seconds
                  else "none (the config has no validation data)")
    rows = {
        "steps": f"{r.steps['longest']} on the longest batches, {r.steps['typical']} on the run's first ones "
                 "(all timed but the first)",
        "tokens/s": per_kind(rates, "{:,.0f}"),
        "padding": per_kind({k: 100 * v for k, v in r.padding.items()}, "{:.1f}%"),
        "peak memory": memory,
        "evaluation": evaluation,
        "checkpoint": f"saved in {format_duration(r.seconds['checkpoint save'])}, loaded into a fresh model and "
                      f"optimizer in {format_duration(r.seconds['checkpoint reload'])}: {r.tensors_compared:,} "
                      "tensors bitwise equal",
        "barrier": f"{_processes(accelerator)} in {format_duration(r.seconds['barrier'])}",
        "step time": f"{1000 * r.step_seconds:,.1f} ms at the run's mean of {r.mean_padded:,.0f} padded tokens per "
                     f"step (measured {1000 * min(s.seconds for s in r.timed):,.1f} to "
                     f"{1000 * max(s.seconds for s in r.timed):,.1f} ms)",
    }
    width = max(map(len, rows))
    head = f"rehearse {config_path}: passed on {_processes(accelerator)} ({accelerator.device})"
    return [head, *(f"  {k:<{width}}  {v}" for k, v in rows.items()), r.estimate.line()]


def _processes(accelerator) -> str:
    return _count(accelerator.num_processes, "process")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}{'es' if noun.endswith('s') else 's'}"
