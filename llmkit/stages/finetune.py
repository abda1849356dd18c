"""`llmkit finetune CONFIG [key=value ...]`: train a task head (and, per finetune.method, the encoder,
LoRA adapters or prompt tokens) on labelled data; the task (finetune.task) is one of llmkit.objectives'.

    llmkit finetune configs/tiny/finetune.yaml model.name_or_path=runs/tiny-mlm
    llmkit finetune configs/finetune/sst2.yaml finetune.method=lora
"""

from __future__ import annotations

import json
from pathlib import Path

from llmkit.config import Config
from llmkit.console import say
from llmkit.data.files import iter_texts
from llmkit.data.labeled import has_validation
from llmkit.data.tokenizer import choose_tokenizer, fingerprint_files
from llmkit.modeling import apply_method, build_model, load_trained
from llmkit.multitask import share_encoder
from llmkit.objectives import TASKS
from llmkit.stages.common import begin_training, report_finished, run_training, write_cards
from llmkit.trainer import Task

ADAPTER_METHODS = ("lora", "prompt")


def run(cfg: Config, config_path: str) -> dict:
    start, accelerator = begin_training(cfg)
    if accelerator is None:
        return report_finished(start)
    tasks, tokenizer = build_tasks(cfg, accelerator)
    model = model_to_train(cfg, tasks, tokenizer, start.resume)
    metrics = run_training(cfg, config_path, "finetune", accelerator, model, tasks, tokenizer, start)
    if cfg.finetune.merge_adapter and accelerator.is_main_process:
        merged = _save_merged(Path(cfg.output_dir), type(tasks[0].objective), tokenizer)
        write_cards(cfg.model_copy(update={"output_dir": str(merged)}), "finetune", tasks, metrics)
    return metrics


def build_tasks(cfg: Config, accelerator):
    """Each task with its encoded training and validation data, and the tokenizer (loaded, or trained on
    every task's training text)."""
    configs = cfg.task_configs()  # {None: cfg} for one task; {name: that task's config} for several
    classes = {name: TASKS[task_cfg.finetune.task] for name, task_cfg in configs.items()}
    with accelerator.main_process_first():  # tokenizer training and tokenization are cached for the others
        train_rows = {name: classes[name].training_rows(task_cfg, name) for name, task_cfg in configs.items()}
        sources = [(rows, classes[name].text_columns(configs[name].data), path)
                   for name, (rows, path) in train_rows.items()]
        tokenizer = choose_tokenizer(cfg, lambda: _words(sources), json.dumps(
            [[fingerprint_files([path]), len(rows), columns] for rows, columns, path in sources]))
        tasks = [_task(configs[name], name, classes[name], rows, tokenizer,
                       cfg.finetune.tasks[name].proportion if name else None) for name, (rows, _) in train_rows.items()]
    return tasks, tokenizer


def model_to_train(cfg: Config, tasks: list[Task], tokenizer, resume: Path | None = None):
    """The model, seeded, or the one in the checkpoint `resume`; several tasks share one encoder."""
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    configs = cfg.task_configs()
    adapters = cfg.finetune.method in ADAPTER_METHODS  # a resumed adapter run rebuilds the base, then loads its adapter
    models = {}
    for task in tasks:
        task_cfg, family = configs[task.name], task.objective
        task_resume = resume / task.name if resume is not None and task.name else resume
        model = build_model(task_cfg, tokenizer, family.model_kind, resume=None if adapters else task_resume,
                            **family.model_labels())
        models[task.name] = apply_method(task_cfg, model, family.peft_task_type,
                                         resume=task_resume if adapters else None)
    return models[None] if None in models else share_encoder(models)


def _task(cfg: Config, name: str | None, task_class, rows, tokenizer, proportion: float | None) -> Task:
    """The task with its labels numbered from the training rows, its encoded training and validation data."""
    family = task_class(cfg, tokenizer, task_class.label_vocabulary(cfg.data, rows))
    eval_data = family.evaluation_data("validation", task=name) if has_validation(cfg.data) else None
    return Task(family, family.encode(rows), eval_data, name, proportion)


def _save_merged(out: Path, task_class, tokenizer) -> Path:
    """The LoRA adapter folded into the base weights: a plain transformers model at output_dir/merged."""
    import os
    import shutil

    merged = load_trained(str(out), task_class.model_kind).merge_and_unload()
    staging = out / ".tmp-merged"
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(out / "merged", ignore_errors=True)
    os.replace(staging, out / "merged")
    say(f"merged model (loads without peft) in {out / 'merged'}/")
    return out / "merged"


def _words(sources):
    """Training text for a tokenizer trained from scratch, from every task (token lists are joined into lines)."""
    for rows, columns, _ in sources:
        for text in iter_texts(rows, columns):
            yield " ".join(text) if isinstance(text, list) else text
