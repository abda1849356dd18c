"""Saving and resuming that never leaves a half-written or corrupted result.

A checkpoint is written into a hidden temporary folder and renamed to `checkpoint-N` only when
complete; a crash mid-save leaves the previous checkpoints untouched, and hidden or incomplete
folders are never taken for checkpoints. The final model is written the same way, then moved into
output_dir file by file (each move atomic). Weights are safetensors; run bookkeeping and RNG states
are JSON; optimizer, scheduler and grad-scaler states are tensor dicts read back with
`torch.load(weights_only=True)` — nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

from llmkit.errors import LlmkitError

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
FINGERPRINT_FILE = "fingerprint.json"  # what the run was (llmkit.resume): compared when it is resumed


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT.match(p.name) and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))


RUN_FILES = ("config.yaml", "run_info.json", "metrics.jsonl", STATE_FILE, "eval_results.json", "test_results.json",
             "eval_predictions.jsonl", "test_predictions.jsonl",
             "README.md", "report.md", "trackers.json", "mlflow.db", "config.json", "generation_config.json",
             "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors",
             "adapter_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
             "vocab.json", "merges.txt", "spiece.model", "added_tokens.json", "chat_template.jinja", "modules.json")
RUN_FOLDERS = ("plots", "runs", "mlflow-artifacts", "merged", "1_Pooling", "onnx")


def clear_earlier_run(output_dir: Path) -> None:
    """Remove what an earlier run wrote in output_dir: its model, tokenizer, results, card, report, logs,
    checkpoints, half-written saves, and each task's model folder of a multi-task run."""
    output_dir = Path(output_dir)
    for path in output_dir.iterdir() if output_dir.is_dir() else []:
        task_model = path.is_dir() and (path / "config.json").exists()
        if path.name in RUN_FOLDERS or CHECKPOINT.match(path.name) or path.name.startswith(".tmp-") or task_model:
            shutil.rmtree(path, ignore_errors=True)
        elif path.name in RUN_FILES or re.fullmatch(r"model-\d+-of-\d+\.safetensors", path.name):
            path.unlink()


def find_checkpoint(output_dir: Path, setting: str) -> Path | None:
    """`latest` -> the newest complete checkpoint (None when there is none); otherwise a path."""
    if setting == "latest":
        found = checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(setting)
    if not (path / STATE_FILE).exists():
        raise LlmkitError(f"train.resume_from_checkpoint: {path} is not a complete checkpoint (no {STATE_FILE})")
    return path


def _save_model(accelerator, model, tokenizer, folder: Path) -> None:
    """A Hugging Face model folder; for a multi-task model, one complete folder per task (folder/<task>/)."""
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP / DeepSpeed: all processes call it
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    targets = unwrapped.hf_models() if hasattr(unwrapped, "hf_models") else {"": ("", unwrapped)}
    for sub, (prefix, hf_model) in targets.items():
        own = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        _save_pretrained(hf_model, own, tokenizer, folder / sub if sub else folder)
    if hasattr(unwrapped, "save_extras"):  # files that belong with the model, e.g. an embedding model's pooling
        unwrapped.save_extras(folder)


def load_weights(accelerator, model, folder: Path) -> None:
    """Put the weights saved in a checkpoint folder back into the (prepared) training model, in place: the
    inverse of _save_model. Tied weights are saved once and come back through the parameter they share."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    unwrapped = accelerator.unwrap_model(model)
    targets = unwrapped.hf_models() if hasattr(unwrapped, "hf_models") else {"": ("", unwrapped)}
    for sub, (_, hf_model) in targets.items():
        saved = folder / sub if sub else folder
        if hasattr(hf_model, "peft_config"):
            set_peft_model_state_dict(hf_model, load_file(saved / "adapter_model.safetensors"))
            continue
        weights = load_file(saved / "model.safetensors")
        missing, unexpected = hf_model.load_state_dict(weights, strict=False)
        state = hf_model.state_dict()
        loaded = {state[name].data_ptr() for name in weights if name in state}
        untied = sorted(name for name in missing if state[name].data_ptr() not in loaded)
        if unexpected or untied:
            raise LlmkitError(f"train.load_best_model_at_end: {saved} does not hold this model's weights "
                              f"(missing {untied[:3]}, unexpected {sorted(unexpected)[:3]})")


def _save_pretrained(model, state_dict: dict, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
    if hasattr(model, "peft_config"):  # an adapter: keep the adapted model's config (labels, head) beside it
        base = model.get_base_model()
        base.config.architectures = [type(base).__name__]
        base.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _staging(output_dir: Path, name: str, accelerator) -> Path:
    staging = output_dir / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    return staging


def save_checkpoint(accelerator, model, optimizer, scheduler, tokenizer, state: dict, fingerprint: dict,
                    output_dir: Path, save_total_limit: int | None) -> Path:
    import torch

    name = f"checkpoint-{state['global_step']}"
    try:
        staging = _staging(output_dir, name, accelerator)
        _save_model(accelerator, model, tokenizer, staging)
        (staging / f"rng_state_{accelerator.process_index}.json").write_text(json.dumps(rng_state()))
        if accelerator.is_main_process:
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
            torch.save(scheduler.state_dict(), staging / "scheduler.pt")
            if accelerator.scaler is not None:
                torch.save(accelerator.scaler.state_dict(), staging / "scaler.pt")
            (staging / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=2) + "\n")
            (staging / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")  # last: marks it complete
    except OSError as e:
        if accelerator.is_main_process:
            shutil.rmtree(output_dir / f".tmp-{name}", ignore_errors=True)
        raise LlmkitError(f"output_dir: cannot write {name} in {output_dir}: {e.strerror or e}; "
                          "earlier checkpoints are untouched") from None
    accelerator.wait_for_everyone()
    final = output_dir / name
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        if save_total_limit:
            keep = state.get("best_checkpoint")
            for old in checkpoints(output_dir)[:-save_total_limit]:
                if old.name != keep:  # the best checkpoint outlives the limit
                    shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, folder: Path, optimizer, scheduler) -> dict:
    """Optimizer, scheduler and scaler states from `folder` (the optimizer's or the scheduler's is left out when
    None is given for it); returns its trainer state. (The weights are loaded by the caller when it builds the
    model from the checkpoint folder.)"""
    if optimizer is not None:
        optimizer.load_state_dict(_load_state(folder / "optimizer.pt"))
    if scheduler is not None:
        scheduler.load_state_dict(_load_state(folder / "scheduler.pt"))
    if accelerator.scaler is not None and (folder / "scaler.pt").exists():
        accelerator.scaler.load_state_dict(_load_state(folder / "scaler.pt"))
    return json.loads((folder / STATE_FILE).read_text())


def _load_state(path: Path) -> dict:
    """A tensor dict saved by torch.save; a truncated or corrupt one is named, in one line."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LlmkitError(f"train.resume_from_checkpoint: {path} is truncated or corrupt ({reason}); re-copy it, "
                          "or resume from an earlier checkpoint") from None


def restore_rng(folder: Path, process_index: int) -> bool:
    """This process's RNG states as saved; False when the checkpoint has none for this rank."""
    path = folder / f"rng_state_{process_index}.json"
    if not path.exists():
        return False
    set_rng_state(json.loads(path.read_text()))
    return True


def save_final(accelerator, model, tokenizer, output_dir: Path, state: dict) -> None:
    staging = _staging(output_dir, "final", accelerator)
    _save_model(accelerator, model, tokenizer, staging)
    if accelerator.is_main_process:
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for path in staging.iterdir():
            if path.is_dir():  # a multi-task model's folder: an earlier run's is replaced whole
                shutil.rmtree(output_dir / path.name, ignore_errors=True)
            os.replace(path, output_dir / path.name)
        staging.rmdir()
    accelerator.wait_for_everyone()


def finished_state(output_dir: Path) -> dict | None:
    """The trainer state of a run that completed in output_dir, if one did."""
    path = Path(output_dir) / STATE_FILE
    if path.exists():
        state = json.loads(path.read_text())
        return state if state.get("finished") else None
    return None


def rng_state() -> dict:
    import numpy as np
    import torch

    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss], "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
