"""`llmkit evaluate CONFIG [--split validation|test]`: score the trained model, write *_results.json.

    llmkit evaluate configs/tiny/finetune.yaml
    llmkit evaluate configs/tiny/finetune.yaml --split test

Uses the model in output_dir when one is there, else model.name_or_path, and only the file it scores.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmkit.config import Config
from llmkit.data.labeled import check_rows, encode, read_split
from llmkit.data.tokenizer import load_tokenizer
from llmkit.evaluation import combine_tasks, evaluate
from llmkit.modeling import load_trained
from llmkit.objectives import TASK_HEADS, MaskedLM, finetune_objective
from llmkit.stages.common import make_accelerator, trained_model_source, write_results
from llmkit.wrappers import MaskedLMLoss


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
    if cfg.kind == "pretrain":
        from llmkit.data.corpus import evaluation_blocks

        model = MaskedLMLoss(load_trained(source, "masked_lm"), cfg.pretrain.sparse_prediction)
        objective = MaskedLM(tokenizer, cfg.pretrain, cfg.seed)
        with accelerator.main_process_first():
            data = evaluation_blocks(cfg, split, tokenizer)
    else:
        model = load_trained(source, TASK_HEADS[cfg.finetune.task][0])
        id2label = {int(i): str(name) for i, name in model.config.id2label.items()}
        objective = finetune_objective(cfg, tokenizer, id2label)
        rows, path, key = read_split(cfg, split, task=task)
        label2id = None if cfg.finetune.task == "regression" else {name: i for i, name in id2label.items()}
        data = encode(cfg, check_rows(cfg, rows, label2id, path, key), tokenizer, label2id)
    return evaluate(accelerator, accelerator.prepare(model), objective, data, cfg.train.per_device_eval_batch_size)
