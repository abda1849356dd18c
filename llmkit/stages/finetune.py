"""`llmkit finetune CONFIG [key=value ...]`: train a task head (and the encoder) on labelled data.

    llmkit finetune configs/tiny/finetune.yaml model.name_or_path=runs/tiny-mlm
"""

from __future__ import annotations

import json

from llmkit.config import Config
from llmkit.data.files import iter_texts
from llmkit.data.labeled import label_names, read_split, tokenize
from llmkit.data.tokenizer import choose_tokenizer, fingerprint_files
from llmkit.modeling import build_model, require_model
from llmkit.objectives import SequenceClassification
from llmkit.stages.common import make_accelerator, plan_run, report_finished, run_training


def run(cfg: Config, config_path: str) -> dict:
    from accelerate.utils import set_seed

    if cfg.model.name_or_path:
        require_model(cfg.model.name_or_path)
    start = plan_run(cfg)
    if start.finished is not None:
        return report_finished(start)
    accelerator = make_accelerator(cfg)
    with accelerator.main_process_first():  # tokenizer training and tokenization are cached for the others
        rows, path, key = read_split(cfg, "train")
        text_columns = [c for c in (cfg.data.text_column, cfg.data.text_pair_column) if c]
        tokenizer = choose_tokenizer(cfg, lambda: iter_texts(rows, text_columns),
                                     json.dumps([fingerprint_files([path]), len(rows), text_columns]))
        names = label_names(rows, cfg.data.label_column)
        label2id = {name: i for i, name in enumerate(names)}
        train_data = tokenize(cfg, rows, tokenizer, label2id, path, key)
        eval_data = None
        if cfg.data.validation_file:
            eval_rows, eval_path, eval_key = read_split(cfg, "validation")
            eval_data = tokenize(cfg, eval_rows, tokenizer, label2id, eval_path, eval_key)
    set_seed(cfg.seed)
    id2label = dict(enumerate(names))
    model = build_model(cfg, tokenizer, "sequence_classification", resume=start.resume, num_labels=len(names),
                        id2label=id2label, label2id=label2id)
    objective = SequenceClassification(tokenizer, id2label)
    return run_training(cfg, config_path, "finetune", accelerator, model, objective, train_data, eval_data,
                        tokenizer, start)

