"""`llmkit evaluate CONFIG [--split validation|test]`: score the trained model, write *_results.json.

    llmkit evaluate configs/tiny/finetune.yaml
    llmkit evaluate configs/tiny/finetune.yaml --split test

Uses the model in output_dir when one is there, else model.name_or_path, and only the file it scores.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmkit.config import Config, data_path
from llmkit.data.files import first_rows, read_file, require_columns
from llmkit.data.labeled import check_rows, encode, read_split
from llmkit.data.sentences import sentence_rows
from llmkit.data.tokenizer import load_tokenizer
from llmkit.embeddings import ZeroShot, embed_texts
from llmkit.errors import LlmkitError
from llmkit.evaluation import combine_tasks, evaluate
from llmkit.metrics import classification_metrics, regression_metrics
from llmkit.modeling import load_trained
from llmkit.objectives import TASK_HEADS, finetune_objective
from llmkit.stages.common import make_accelerator, trained_model_source, write_results
from llmkit.wrappers import PRETRAIN_HEADS, language_model


def run(cfg: Config, split: str) -> dict:
    from accelerate.utils import set_seed

    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    configs = cfg.task_configs()
    if None in configs:
        results = {"split": split, **_evaluate(accelerator, cfg, split)}
    else:  # each task's model is scored on its own file, then reported together as in training
        results = {"split": split, **combine_tasks({name: _evaluate(accelerator, task_cfg, split, name)
                                                    for name, task_cfg in configs.items()})}
    if accelerator.is_main_process:
        name = "eval_results.json" if split == "validation" else f"{split}_results.json"
        write_results(Path(cfg.output_dir) / name, results)
        print(json.dumps(results, indent=2))
    return results


def _evaluate(accelerator, cfg: Config, split: str, task: str | None = None) -> dict:
    source = trained_model_source(cfg)
    tokenizer = load_tokenizer(source, "model.name_or_path")
    if cfg.infer.task != "auto":
        return _evaluate_untrained(accelerator, cfg, split, source, tokenizer)
    if cfg.kind == "pretrain":
        from llmkit.data.corpus import evaluation_blocks

        model, objective = language_model(cfg, load_trained(source, PRETRAIN_HEADS[cfg.pretrain.objective]), tokenizer,
                                          cfg.pretrain.pseudo_perplexity)
        with accelerator.main_process_first():
            data = sentence_rows(cfg, split, tokenizer) if cfg.pretrain.objective == "contrastive" \
                else evaluation_blocks(cfg, split, tokenizer)
    else:
        model = load_trained(source, TASK_HEADS[cfg.finetune.task][0])
        id2label = {int(i): str(name) for i, name in model.config.id2label.items()}
        objective = finetune_objective(cfg, tokenizer, id2label)
        rows, path, key = read_split(cfg, split, task=task)
        label2id = None if cfg.finetune.task == "regression" else {name: i for i, name in id2label.items()}
        data = encode(cfg, check_rows(cfg, rows, label2id, path, key), tokenizer, label2id)
    return evaluate(accelerator, accelerator.prepare(model), objective, data, cfg.train.per_device_eval_batch_size)


def _evaluate_untrained(accelerator, cfg: Config, split: str, source: str, tokenizer) -> dict:
    """infer.task `embed`: correlation of the pairs' cosine with their score (e.g. STS-B);
    `zero_shot`: classification metrics of the zero-shot labels."""
    import torch

    d, batch = cfg.data, cfg.train.per_device_eval_batch_size
    key = f"data.{split}_file"
    path = data_path(cfg, f"{split}_file")
    if path is None:
        raise LlmkitError(f"{key}: required to evaluate on the {split} split")
    if cfg.infer.task == "embed" and d.text_pair_column is None:
        raise LlmkitError("data.text_pair_column: evaluating embeddings scores sentence pairs; name the second "
                          "sentence's column (and data.label_column their similarity score)")
    columns = [d.text_column] + ([d.text_pair_column] if cfg.infer.task == "embed" else []) + [d.label_column]
    rows = read_file(path, key)
    require_columns(rows, columns, path, key)
    rows = first_rows(rows, d.max_eval_samples)
    texts = [str(t) for t in rows[d.text_column]]
    if cfg.infer.task == "embed":
        pairs = [str(t) for t in rows[d.text_pair_column]]
        vectors = embed_texts(cfg, source, tokenizer, texts + pairs, accelerator, batch)
        cosine = torch.nn.functional.cosine_similarity(vectors[:len(texts)], vectors[len(texts):]).tolist()
        scores = regression_metrics([float(v) for v in rows[d.label_column]], cosine)
        return {"num_examples": len(texts), "spearman": scores["spearman"], "pearson": scores["pearson"]}
    names = list(cfg.infer.labels)
    gold = [str(v) for v in rows[d.label_column]]
    unknown = next((i for i, g in enumerate(gold) if g not in cfg.infer.labels), None)
    if unknown is not None:
        raise LlmkitError(f"{key}: {path} row {unknown + 1}: label {gold[unknown]!r} is not one of infer.labels "
                          f"({', '.join(names)})")
    predicted = [names.index(p["label"]) for p in ZeroShot(cfg, source, tokenizer, accelerator, batch).predict(texts)]
    return {"num_examples": len(texts),
            **classification_metrics([names.index(g) for g in gold], predicted, dict(enumerate(names)))}
