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
from llmkit.trainer import Task
from llmkit.wrappers import share_encoder

ADAPTER_METHODS = ("lora", "prompt")


def run(cfg: Config, config_path: str) -> dict:
    from accelerate.utils import set_seed

    if cfg.model.name_or_path:
        require_model(cfg.model.name_or_path)
    start = plan_run(cfg)
    if start.finished is not None:
        return report_finished(start)
    accelerator = make_accelerator(cfg)
    configs = cfg.task_configs()  # {None: cfg} for one task; {name: that task's config} for several
    with accelerator.main_process_first():  # tokenizer training and tokenization are cached for the others
        train_rows = {name: _training_rows(task_cfg, name) for name, task_cfg in configs.items()}
        sources = [(rows, text_columns(configs[name]), path) for name, (rows, path) in train_rows.items()]
        tokenizer = choose_tokenizer(cfg, lambda: _words(sources), json.dumps(
            [[fingerprint_files([path]), len(rows), columns] for rows, columns, path in sources]))
        data = {name: _encoded(task_cfg, name, train_rows[name][0], tokenizer) for name, task_cfg in configs.items()}
    set_seed(cfg.seed)
    adapters = cfg.finetune.method in ADAPTER_METHODS  # a resumed adapter run rebuilds the base, then loads its adapter
    models, tasks = {}, []
    for name, task_cfg in configs.items():
        id2label, train_data, eval_data = data[name]
        head, problem_type = TASK_HEADS[task_cfg.finetune.task]
        labels = {"num_labels": len(id2label), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
        if problem_type:
            labels["problem_type"] = problem_type
        resume = start.resume / name if start.resume is not None and name else start.resume
        models[name] = build_model(task_cfg, tokenizer, head, resume=None if adapters else resume, **labels)
        models[name] = apply_method(task_cfg, models[name], head, resume=resume if adapters else None)
        tasks.append(Task(finetune_objective(task_cfg, tokenizer, id2label), train_data, eval_data, name,
                          cfg.finetune.tasks[name].proportion if name else None))
    model = models[None] if None in models else share_encoder(models)
    metrics = run_training(cfg, config_path, "finetune", accelerator, model, tasks, tokenizer, start)
    if cfg.finetune.merge_adapter and accelerator.is_main_process:
        _save_merged(Path(cfg.output_dir), TASK_HEADS[cfg.finetune.task][0], tokenizer)
    return metrics


def _training_rows(cfg: Config, task: str | None):
    rows, path, key = read_split(cfg, "train", task=task)
    return check_rows(cfg, rows, None, path, key), path


def _encoded(cfg: Config, task: str | None, rows, tokenizer):
    """(id2label, training data, validation data or None), labels numbered from the training rows."""
    names = label_names(cfg, rows)
    label2id = {name: i for i, name in enumerate(names)} if names is not None else None
    eval_data = None
    if cfg.data.validation_file:
        eval_rows, eval_path, eval_key = read_split(cfg, "validation", task=task)
        eval_data = encode(cfg, check_rows(cfg, eval_rows, label2id, eval_path, eval_key), tokenizer, label2id)
    id2label = dict(enumerate(names)) if names is not None else {0: "score"}
    return id2label, encode(cfg, rows, tokenizer, label2id), eval_data


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


def _words(sources):
    """Training text for a tokenizer trained from scratch, from every task (token lists are joined into lines)."""
    for rows, columns, _ in sources:
        for text in iter_texts(rows, columns):
            yield " ".join(text) if isinstance(text, list) else text
