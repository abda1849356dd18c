"""Set-up shared by the stages: the Accelerator, the output directory, and a training run's frame."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmkit.card import write_card
from llmkit.checkpoint import STATE_FILE, checkpoints, clear_earlier_run, find_checkpoint, finished_state, save_final
from llmkit.config import Config, save_config
from llmkit.console import say
from llmkit.errors import InterruptedRun, LlmkitError
from llmkit.launch import end_run
from llmkit.modeling import has_model, require_model
from llmkit.objectives import family_of
from llmkit.report import write_report
from llmkit.resume import REFUSED, Verdict, fingerprint, judge
from llmkit.runlog import RunLog, mark_run, write_run_info
from llmkit.trackers import Trackers


def make_accelerator(cfg: Config, trackers_dir: Path | None = None):
    """GPU when there is one; otherwise the CPU with `cpu=True`, which is what makes several
    processes under torchrun real DDP over gloo (a plain Accelerator() leaves each rank alone)."""
    import torch
    from accelerate import Accelerator

    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    cpu = cfg.train.use_cpu or not has_gpu
    if cpu and cfg.train.mixed_precision == "fp16":
        raise LlmkitError("train.mixed_precision: fp16 needs a GPU; use bf16 on the CPU")
    handlers = []
    multi_task = cfg.finetune is not None and cfg.finetune.tasks
    if multi_task or family_of(cfg).unused_parameters:
        from accelerate.utils import DistributedDataParallelKwargs

        # Parameters without a gradient in a step, which DDP must be told to expect: a multi-task step trains
        # one task (the other heads idle); the family may leave some idle too (see its unused_parameters).
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    tracking = {}
    if trackers_dir is not None and cfg.train.report_to:
        from llmkit.trackers import project_configuration

        tracking = {"log_with": cfg.train.report_to, "project_config": project_configuration(trackers_dir)}
    return Accelerator(cpu=cpu, mixed_precision=cfg.train.mixed_precision, kwargs_handlers=handlers, **tracking)


def begin_training(cfg: Config):
    """(where the run starts, the Accelerator), or (a finished run's start, None) when output_dir holds one.
    A resumed run's verdict is printed here, or its refusal raised, before anything is written.
    Process-wide settings for training are made here, once."""
    from llmkit.cpu import keep_freed_memory

    if cfg.model.name_or_path:
        require_model(cfg.model.name_or_path)
    start = plan_run(cfg)
    if start.finished is not None:
        return start, None
    accelerator = make_accelerator(cfg, trackers_dir=start.out)
    start.fingerprint = fingerprint(cfg, accelerator.num_processes)
    if start.resume is not None:
        start.verdict = judge(start.resume, start.fingerprint, cfg.train.resume_force)
        if start.verdict.kind == REFUSED:
            raise LlmkitError(start.verdict.line)
        say(start.verdict.line)
    if accelerator.device.type == "cpu":
        keep_freed_memory()  # glibc keeps freed blocks for the next step instead of unmapping them
    return start, accelerator


@dataclass
class RunStart:
    out: Path
    resume: Path | None = None  # the checkpoint to continue from
    finished: dict | None = None  # set when the run being resumed had already completed
    fingerprint: dict = field(default_factory=dict)  # this run's, saved in its checkpoints (llmkit.resume)
    verdict: Verdict | None = None  # how `resume` continues


def plan_run(cfg: Config) -> RunStart:
    """Where this run starts: read-only, so that a failure while the data and model are built
    afterwards leaves output_dir exactly as it was."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise LlmkitError(f"output_dir: {out} exists and is not a folder")
    setting = cfg.train.resume_from_checkpoint
    if setting is not None:
        if (done := finished_state(out)) is not None:
            return RunStart(out, finished=done)
        resume = find_checkpoint(out, setting)
        if resume is None:
            say(f"train.resume_from_checkpoint=latest: no checkpoint in {out} yet, starting from scratch")
        return RunStart(out, resume=resume)
    earlier = checkpoints(out)
    if (earlier or has_model(out) or finished_state(out)) and not cfg.train.overwrite_output_dir:
        what = f"{len(earlier)} checkpoint(s)" if earlier else "a trained model"
        raise LlmkitError(f"output_dir: {out} already holds {what}; continue it with "
                          "train.resume_from_checkpoint=latest, start over with train.overwrite_output_dir=true, "
                          "or choose another output_dir")
    return RunStart(out)


def claim_output_dir(start: RunStart, accelerator) -> None:
    """Make output_dir writable and, for a new run, remove every file of an earlier run there: called once
    the data and model are built and before anything is written, so the folder never mixes two runs."""
    _check_writable(start.out, accelerator)
    if start.resume is None and accelerator.is_main_process:
        clear_earlier_run(start.out)
    accelerator.wait_for_everyone()


def _check_writable(out: Path, accelerator) -> None:
    if accelerator.is_main_process:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".llmkit-write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise LlmkitError(f"output_dir: cannot write to {out}: {e.strerror or e}") from None
    accelerator.wait_for_everyone()


def run_training(cfg: Config, config_path: str, stage: str, accelerator, model, tasks: list, tokenizer,
                 start: RunStart) -> dict:
    """Claim output_dir, start the trackers, then train and save (_train_and_save)."""
    claim_output_dir(start, accelerator)
    out = start.out
    resumed_step = json.loads((start.resume / STATE_FILE).read_text())["global_step"] if start.resume else None
    trackers = Trackers(accelerator, cfg.train.report_to, out, cfg.model_dump(mode="json"), resumed_step)
    log = RunLog(out, accelerator.is_main_process, trackers.log)
    try:
        metrics = _train_and_save(cfg, config_path, stage, accelerator, model, tasks, tokenizer, start, log)
    except BaseException:
        trackers.finish()  # a crash or Ctrl-C ends the tracker runs too; no collective: other processes may be gone
        raise
    accelerator.wait_for_everyone()  # the main process wrote the card and report meanwhile
    trackers.finish()
    end_run(accelerator)  # every process at once: the process group goes down together (llmkit.launch)
    return metrics


def _train_and_save(cfg: Config, config_path: str, stage: str, accelerator, model, tasks: list, tokenizer,
                    start: RunStart, log: RunLog) -> dict:
    """Write the resolved config and run info, train, save the final model, its results, card and report."""
    from llmkit.trainer import train

    out = start.out
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")
    write_run_info(out, stage, config_path, accelerator, train_examples=sum(len(task.train_data) for task in tasks),
                   validation_examples=sum(len(task.eval_data) for task in tasks if task.eval_data is not None),
                   resumed_from=str(start.resume) if start.resume else None, status="running")
    try:
        result = train(accelerator, cfg.train, cfg.seed, model, tasks, tokenizer, out, log, start.fingerprint,
                       start.resume, start.verdict)
        save_final(accelerator, result.model, tokenizer, out, asdict(result.state))
    except InterruptedRun:
        if accelerator.is_main_process:
            write_report(out)  # what the run did up to its last checkpoint
            mark_run(out, "interrupted")
        raise
    except BaseException as e:
        if accelerator.is_main_process:
            mark_run(out, "failed", error=f"{type(e).__name__}: {e}".strip())
        raise
    if accelerator.is_main_process:
        mark_run(out, "finished")
        if result.metrics:
            write_results(out / "eval_results.json", {"split": "validation", **result.metrics})
        cards = write_cards(cfg, stage, tasks, result.metrics)
        log.print(summary(stage, out, result.state, result.metrics, [*cards, write_report(out)]))
    return result.metrics


def write_cards(cfg: Config, stage: str, tasks: list, metrics: dict) -> list[Path]:
    """A model card in each trained model's folder (one per task in a multi-task run)."""
    configs, cards = cfg.task_configs(), []
    for task in tasks:
        results = metrics if task.name is None else {k.removeprefix(f"{task.name}_"): v for k, v in metrics.items()
                                                     if k.startswith(f"{task.name}_")}
        examples = {"train": len(task.train_data), "validation": len(task.eval_data) if task.eval_data else 0}
        task_cfg = configs[task.name]
        cards.append(write_card(Path(task_cfg.output_dir), task_cfg, type(task.objective), stage, results, examples,
                                Path(cfg.output_dir) / "metrics.jsonl", task.objective.tokenizer.mask_token))
    return cards


def summary(stage: str, out: Path, state, metrics: dict, cards: list[Path]) -> str:
    """The lines a finished run ends with: why it stopped, its final (or best) metrics, where everything is."""
    how = {None: "", "max_time": ", stopped by train.max_time", "early_stopping": ", stopped early"}[state.stopped_by]
    scalars = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    lines = [f"{stage} done: {state.global_step:,} steps in {state.train_seconds:.1f} s{how}"]
    if scalars:
        lines.append(f"  final model's evaluation: {scalars}")
    if state.best_step is not None:
        lines.append(f"  best {state.best_metric:.4g} at step {state.best_step}"
                     + (f" ({state.best_checkpoint})" if state.best_checkpoint else ""))
    lines += [f"  model and tokenizer in {out}/", f"  model card and report: {', '.join(map(str, cards))}",
              f"  metrics in {out}/metrics.jsonl" + (f", results in {out}/eval_results.json" if metrics else "")]
    return "\n".join(lines)


def report_finished(start: RunStart) -> dict:
    say(f"{start.out} holds a run that already finished (step {start.finished['global_step']}); "
        "its final model is left as it is")
    return start.finished.get("last_eval", {})


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def trained_model_source(cfg: Config) -> str:
    """evaluate / infer use the model trained in output_dir when there is one, else model.name_or_path."""
    if has_model(cfg.output_dir):
        return cfg.output_dir
    if cfg.model.name_or_path:
        return cfg.model.name_or_path
    raise LlmkitError(f"output_dir: {cfg.output_dir} holds no trained model and model.name_or_path is not set; "
                      "train first or point model.name_or_path at a model")
