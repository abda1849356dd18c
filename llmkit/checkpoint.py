"""Saving that never leaves a half-written or corrupted result.

A checkpoint is written into a hidden temporary folder and renamed to `checkpoint-N` only when
complete; a crash mid-save leaves the previous checkpoints untouched, and hidden folders are never
taken for checkpoints. The final model is written the same way, then moved into output_dir file by
file (each move atomic). Weights are safetensors; bookkeeping is JSON; optimizer and scheduler
states are plain tensor dicts that load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT.match(p.name) and (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))


def _save_model(accelerator, model, tokenizer, folder: Path) -> None:
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP / DeepSpeed: all processes call it
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(folder)


def _staging(output_dir: Path, name: str, accelerator) -> Path:
    staging = output_dir / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    return staging


def save_checkpoint(accelerator, model, optimizer, scheduler, tokenizer, state: dict, output_dir: Path,
                    save_total_limit: int | None) -> Path:
    import torch

    name = f"checkpoint-{state['global_step']}"
    staging = _staging(output_dir, name, accelerator)
    _save_model(accelerator, model, tokenizer, staging)
    if accelerator.is_main_process:
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        (staging / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
    accelerator.wait_for_everyone()
    final = output_dir / name
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        if save_total_limit:
            for old in checkpoints(output_dir)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_final(accelerator, model, tokenizer, output_dir: Path) -> None:
    staging = _staging(output_dir, "final", accelerator)
    _save_model(accelerator, model, tokenizer, staging)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for path in staging.iterdir():
            os.replace(path, output_dir / path.name)
        staging.rmdir()
    accelerator.wait_for_everyone()

