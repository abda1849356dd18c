"""`llmkit evaluate CONFIG [--split validation|test] [--save-predictions]`: score the trained model, write
*_results.json (and, for a fine-tuned task, *_predictions.jsonl: each example's inputs, gold, predicted, score).

    llmkit evaluate configs/tiny/finetune.yaml
    llmkit evaluate configs/tiny/finetune.yaml --split test --save-predictions

Uses the model in output_dir when one is there, else model.name_or_path, and only the file it scores.
What is scored, and how, is the objective's or task's (llmkit.objectives).
"""

from __future__ import annotations

import json
from pathlib import Path

from llmkit.config import Config
from llmkit.console import say
from llmkit.data.outputs import JsonLines
from llmkit.data.tokenizer import load_tokenizer
from llmkit.evaluation import combine_tasks
from llmkit.objectives import family_of
from llmkit.stages.common import make_accelerator, trained_model_source, write_results


def run(cfg: Config, split: str, save_predictions: bool = False) -> dict:
    from accelerate.utils import set_seed

    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    configs = cfg.task_configs()
    prefix = "eval" if split == "validation" else split
    predictions = {name: [] if save_predictions else None for name in configs}
    if None in configs:
        results = {"split": split, **_evaluate(accelerator, cfg, split, None, predictions[None])}
    else:  # each task's model is scored on its own file, then reported together as in training
        results = {"split": split, **combine_tasks({name: _evaluate(accelerator, task_cfg, split, name, predictions[name])
                                                    for name, task_cfg in configs.items()})}
    if accelerator.is_main_process:
        write_results(Path(cfg.output_dir) / f"{prefix}_results.json", results)
        for name, records in predictions.items():
            if records is not None:
                sink = JsonLines(str(Path(configs[name].output_dir) / f"{prefix}_predictions.jsonl"))
                sink.write(records)
                sink.close()
        # Per-example pairs (a regression's scatter) stay in the file.
        say(json.dumps({k: v for k, v in results.items() if not k.endswith("predictions")}, indent=2))
    return results


def _evaluate(accelerator, cfg: Config, split: str, task: str | None, predictions: list | None) -> dict:
    source = trained_model_source(cfg)
    tokenizer = load_tokenizer(source, "model.name_or_path")
    return family_of(cfg).evaluation(cfg, split, source, tokenizer, accelerator, task, predictions)
