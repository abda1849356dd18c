"""`llmkit pretrain CONFIG [key=value ...]`: self-supervised pretraining (pretrain.objective: masked LM,
with NSP / SOP, causal LM, or contrastive sentence embeddings; see llmkit.objectives).

    llmkit pretrain configs/tiny/pretrain.yaml output_dir=runs/tiny-mlm train.max_steps=50
    torchrun --nproc_per_node 2 -m llmkit pretrain configs/tiny/pretrain.yaml
"""

from __future__ import annotations

from llmkit.config import Config
from llmkit.data.files import first_rows
from llmkit.modeling import build_model
from llmkit.objectives import OBJECTIVES
from llmkit.stages.common import begin_training, report_finished, run_training
from llmkit.trainer import Task


def run(cfg: Config, config_path: str) -> dict:
    from accelerate.utils import set_seed

    start, accelerator = begin_training(cfg)
    if accelerator is None:
        return report_finished(start)
    objective_class = OBJECTIVES[cfg.pretrain.objective]
    with accelerator.main_process_first():  # the main process tokenizes; the others read its cache
        tokenizer, train, validation = objective_class.training_data(cfg)
    set_seed(cfg.seed)
    model = build_model(cfg, tokenizer, objective_class.model_kind, resume=start.resume)
    objective = objective_class(cfg, tokenizer)
    validation = first_rows(validation, cfg.data.max_eval_samples) if validation is not None else None
    return run_training(cfg, config_path, "pretrain", accelerator, objective.wrap(model),
                        [Task(objective, train, validation)], tokenizer, start)
