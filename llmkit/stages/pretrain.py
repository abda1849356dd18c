"""`llmkit pretrain CONFIG [key=value ...]`: self-supervised pretraining (masked LM).

    llmkit pretrain configs/tiny/pretrain.yaml output_dir=runs/tiny-mlm train.max_steps=50
    torchrun --nproc_per_node 2 -m llmkit pretrain configs/tiny/pretrain.yaml
"""

from __future__ import annotations

from llmkit.config import Config
from llmkit.data.corpus import prepare_corpus
from llmkit.data.files import first_rows
from llmkit.modeling import build_model, require_model
from llmkit.objectives import MaskedLM
from llmkit.stages.common import make_accelerator, plan_run, report_finished, run_training
from llmkit.trainer import Task
from llmkit.wrappers import MaskedLMLoss


def run(cfg: Config, config_path: str) -> dict:
    from accelerate.utils import set_seed

    if cfg.model.name_or_path:
        require_model(cfg.model.name_or_path)
    start = plan_run(cfg)
    if start.finished is not None:
        return report_finished(start)
    accelerator = make_accelerator(cfg)
    with accelerator.main_process_first():  # the main process tokenizes; the others read its cache
        corpus = prepare_corpus(cfg)
    set_seed(cfg.seed)
    model = MaskedLMLoss(build_model(cfg, corpus.tokenizer, "masked_lm", resume=start.resume),
                         cfg.pretrain.sparse_prediction)
    objective = MaskedLM(corpus.tokenizer, cfg.pretrain, cfg.seed)
    validation = first_rows(corpus.validation, cfg.data.max_eval_samples) if corpus.validation is not None else None
    return run_training(cfg, config_path, "pretrain", accelerator, model, [Task(objective, corpus.train, validation)],
                        corpus.tokenizer, start)
