"""Set-up shared by the stages: the Accelerator, the output directory, and a training run's frame."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llmkit.checkpoint import checkpoints, save_final
from llmkit.config import Config, save_config
from llmkit.errors import LlmkitError
from llmkit.modeling import has_model
from llmkit.runlog import RunLog, write_run_info


def make_accelerator(cfg: Config):
    """GPU when there is one; otherwise the CPU with `cpu=True`, which is what makes several
    processes under torchrun real DDP over gloo (a plain Accelerator() leaves each rank alone)."""
    import torch
    from accelerate import Accelerator

    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    cpu = cfg.train.use_cpu or not has_gpu
    if cpu and cfg.train.mixed_precision == "fp16":
        raise LlmkitError("train.mixed_precision: fp16 needs a GPU; use bf16 on the CPU")
    return Accelerator(cpu=cpu, mixed_precision=cfg.train.mixed_precision)


def prepare_output_dir(cfg: Config, accelerator) -> Path:
    """A writable output_dir that holds no earlier run, unless train.overwrite_output_dir says so."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise LlmkitError(f"output_dir: {out} exists and is not a folder")
    earlier = checkpoints(out)
    if (earlier or has_model(out)) and not cfg.train.overwrite_output_dir:
        what = f"{len(earlier)} checkpoint(s)" if earlier else "a trained model"
        raise LlmkitError(f"output_dir: {out} already holds {what}; choose another output_dir or set "
                          "train.overwrite_output_dir=true to start over")
    if accelerator.is_main_process:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".llmkit-write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise LlmkitError(f"output_dir: cannot write to {out}: {e.strerror or e}") from None
        for old in earlier:
            shutil.rmtree(old)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    return out


def run_training(cfg: Config, config_path: str, stage: str, accelerator, model, objective, train_data, eval_data,
                 tokenizer, out: Path) -> dict:
    """Write the resolved config and run info, train, save the final model, report where it all is."""
    from llmkit.trainer import train

    log = RunLog(out, accelerator.is_main_process)
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")
    write_run_info(out, stage, config_path, accelerator, train_examples=len(train_data),
                   validation_examples=len(eval_data) if eval_data is not None else 0)
    result = train(accelerator, cfg, model, objective, train_data, eval_data, tokenizer, out, log)
    save_final(accelerator, result["model"], tokenizer, out)
    if result["metrics"] and accelerator.is_main_process:
        write_results(out / "eval_results.json", {"split": "validation", **result["metrics"]})
    log.print(f"{stage} done: model and tokenizer in {out}/, metrics in {out}/metrics.jsonl")
    return result["metrics"]


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
