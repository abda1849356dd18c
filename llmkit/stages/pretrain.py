"""`llmkit pretrain CONFIG [key=value ...]`: self-supervised pretraining (pretrain.objective: masked LM,
with NSP / SOP, causal LM, or contrastive sentence embeddings; see llmkit.objectives).

    llmkit pretrain configs/tiny/pretrain.yaml output_dir=runs/tiny-mlm train.max_steps=50
    torchrun --nproc_per_node 2 -m llmkit pretrain configs/tiny/pretrain.yaml
"""

from __future__ import annotations

from pathlib import Path

from llmkit.config import Config
from llmkit.data.files import first_rows
from llmkit.modeling import build_model
from llmkit.objectives import OBJECTIVES
from llmkit.stages.common import begin_training, report_finished, run_training
from llmkit.trainer import Task


def run(cfg: Config, config_path: str) -> dict:
    start, accelerator = begin_training(cfg)
    if accelerator is None:
        return report_finished(start)
    tasks, tokenizer = build_tasks(cfg, accelerator)
    model = model_to_train(cfg, tasks, tokenizer, start.resume)
    return run_training(cfg, config_path, "pretrain", accelerator, model, tasks, tokenizer, start)


def build_tasks(cfg: Config, accelerator):
    """The objective with its training and validation data (one task), and the tokenizer."""
    objective_class = OBJECTIVES[cfg.pretrain.objective]
    with accelerator.main_process_first():  # the main process tokenizes; the others read its cache
        tokenizer, train, validation = objective_class.training_data(cfg)
    validation = first_rows(validation, cfg.data.max_eval_samples) if validation is not None else None
    return [Task(objective_class(cfg, tokenizer), train, validation)], tokenizer


def model_to_train(cfg: Config, tasks: list[Task], tokenizer, resume: Path | None = None):
    """The module the loop trains (the model, seeded, or the one in the checkpoint `resume`, in the objective's
    wrapper)."""
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    objective = tasks[0].objective
    return objective.wrap(build_model(cfg, tokenizer, objective.model_kind, resume=resume))
