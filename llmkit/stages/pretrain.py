"""`llmkit pretrain CONFIG [key=value ...]`: self-supervised pretraining (pretrain.objective: masked LM,
with NSP / SOP, causal LM, or contrastive sentence embeddings).

    llmkit pretrain configs/tiny/pretrain.yaml output_dir=runs/tiny-mlm train.max_steps=50
    torchrun --nproc_per_node 2 -m llmkit pretrain configs/tiny/pretrain.yaml
"""

from __future__ import annotations

from llmkit.config import Config, data_path
from llmkit.data.corpus import prepare_corpus
from llmkit.data.files import first_rows
from llmkit.data.sentences import sentence_rows, sentence_texts
from llmkit.data.tokenizer import choose_tokenizer, fingerprint_files
from llmkit.modeling import build_model, require_model
from llmkit.stages.common import make_accelerator, plan_run, report_finished, run_training
from llmkit.trainer import Task
from llmkit.wrappers import PRETRAIN_HEADS, language_model


def run(cfg: Config, config_path: str) -> dict:
    from accelerate.utils import set_seed

    if cfg.model.name_or_path:
        require_model(cfg.model.name_or_path)
    start = plan_run(cfg)
    if start.finished is not None:
        return report_finished(start)
    accelerator = make_accelerator(cfg)
    with accelerator.main_process_first():  # the main process tokenizes; the others read its cache
        if cfg.pretrain.objective == "contrastive":  # sentences (or pairs), one per row, not packed blocks
            tokenizer = choose_tokenizer(cfg, lambda: sentence_texts(cfg),
                                         fingerprint_files([data_path(cfg, "train_file")]))
            train = sentence_rows(cfg, "train", tokenizer)
            validation = sentence_rows(cfg, "validation", tokenizer, required=False)
        else:
            corpus = prepare_corpus(cfg)
            tokenizer, train, validation = corpus.tokenizer, corpus.train, corpus.validation
    set_seed(cfg.seed)
    model = build_model(cfg, tokenizer, PRETRAIN_HEADS[cfg.pretrain.objective], resume=start.resume)
    model, objective = language_model(cfg, model, tokenizer)
    validation = first_rows(validation, cfg.data.max_eval_samples) if validation is not None else None
    return run_training(cfg, config_path, "pretrain", accelerator, model, [Task(objective, train, validation)],
                        tokenizer, start)
