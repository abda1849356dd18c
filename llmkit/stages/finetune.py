"""`llmkit finetune CONFIG [key=value ...]`: train a task head (and, per finetune.method, the encoder,
LoRA adapters or prompt tokens) on labelled data.

    llmkit finetune configs/tiny/finetune.yaml model.name_or_path=runs/tiny-mlm
    llmkit finetune configs/finetune/sst2.yaml finetune.method=lora
"""

from __future__ import annotations

import json
from pathlib import Path

from llmkit.config import Config
from llmkit.data.files import iter_texts
from llmkit.data.labeled import check_rows, encode, label_names, read_split, text_columns
from llmkit.data.tokenizer import choose_tokenizer, fingerprint_files
from llmkit.modeling import apply_method, build_model, load_trained, require_model
from llmkit.objectives import TASK_HEADS, finetune_objective
from llmkit.stages.common import make_accelerator, plan_run, report_finished, run_training

ADAPTER_METHODS = ("lora", "prompt")


def run(cfg: Config, config_path: str) -> dict:
    from accelerate.utils import set_seed

    if cfg.model.name_or_path:
        require_model(cfg.model.name_or_path)
    start = plan_run(cfg)
    if start.finished is not None:
        return report_finished(start)
    accelerator = make_accelerator(cfg)
    head, problem_type = TASK_HEADS[cfg.finetune.task]
    with accelerator.main_process_first():  # tokenizer training and tokenization are cached for the others
        rows, path, key = read_split(cfg, "train")
        rows = check_rows(cfg, rows, None, path, key)
        columns = text_columns(cfg)
        tokenizer = choose_tokenizer(cfg, lambda: _words(rows, columns), json.dumps([fingerprint_files([path]),
                                                                                     len(rows), columns]))
        names = label_names(cfg, rows)
        label2id = {name: i for i, name in enumerate(names)} if names is not None else None
        train_data = encode(cfg, rows, tokenizer, label2id)
        eval_data = None
        if cfg.data.validation_file:
            eval_rows, eval_path, eval_key = read_split(cfg, "validation")
            eval_data = encode(cfg, check_rows(cfg, eval_rows, label2id, eval_path, eval_key), tokenizer, label2id)
    set_seed(cfg.seed)
    id2label = dict(enumerate(names)) if names is not None else {0: "score"}
    labels = {"num_labels": len(id2label), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    if problem_type:
        labels["problem_type"] = problem_type
    adapters = cfg.finetune.method in ADAPTER_METHODS  # a resumed adapter run rebuilds the base, then loads its adapter
    model = build_model(cfg, tokenizer, head, resume=None if adapters else start.resume, **labels)
    model = apply_method(cfg, model, head, resume=start.resume if adapters else None)
    objective = finetune_objective(cfg, tokenizer, id2label)
    metrics = run_training(cfg, config_path, "finetune", accelerator, model, objective, train_data, eval_data,
                           tokenizer, start)
    if cfg.finetune.merge_adapter and accelerator.is_main_process:
        _save_merged(Path(cfg.output_dir), head, tokenizer)
    return metrics


def _save_merged(out: Path, head: str, tokenizer) -> None:
    """The LoRA adapter folded into the base weights: a plain transformers model at output_dir/merged."""
    import os
    import shutil

    merged = load_trained(str(out), head).merge_and_unload()
    staging = out / ".tmp-merged"
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(out / "merged", ignore_errors=True)
    os.replace(staging, out / "merged")
    print(f"merged model (loads without peft) in {out / 'merged'}/")


def _words(rows, columns: list[str]):
    """Training text for a tokenizer trained from scratch (token lists are joined into lines)."""
    for text in iter_texts(rows, columns):
        yield " ".join(text) if isinstance(text, list) else text
