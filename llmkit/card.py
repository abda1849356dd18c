"""The model card: README.md in every trained folder, as the Hugging Face Hub renders it, built with
huggingface_hub's ModelCard / ModelCardData. Its metadata holds the pipeline tag, the base model, the data
files and a model-index with the evaluation results (those of eval_results.json); its text the
hyperparameters, every evaluation, the framework versions and a usage snippet that works on the folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llmkit.paths import split_file

if TYPE_CHECKING:
    from llmkit.config import Config

CARD = "README.md"
HYPERPARAMETERS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
                   "max_steps", "optim", "weight_decay", "lr_scheduler_type", "warmup_ratio", "warmup_steps",
                   "max_grad_norm", "mixed_precision")


def write_card(folder: Path, cfg: Config, family, stage: str, results: dict, examples: dict, log: Path,
               mask_token: str | None = None) -> Path:
    """Write folder/README.md for the model trained by `cfg` (`family`: its objective's or task's class).
    `results`: its evaluation (eval_results.json), `examples`: training / validation example counts, `log`:
    the run's metrics.jsonl."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from llmkit.runlog import package_versions

    files = {split: split_file(cfg.data, split) for split in ("train", "validation")}
    scores = {k: v for k, v in results.items() if isinstance(v, (int, float)) and k != "num_examples"}
    validation = Path(files["validation"]).name if files["validation"] else "held-out part of the training data"
    data = ModelCardData(
        model_name=Path(cfg.output_dir).name, library_name="transformers", pipeline_tag=family.pipeline_task,
        base_model=cfg.model.name_or_path, tags=["llmkit", stage],
        datasets=sorted({Path(p).name for p in files.values() if p}) or None, metrics=sorted(scores) or None,
        eval_results=[EvalResult(task_type=family.pipeline_task or family.model_kind.head,  # the card needs a type
                                 dataset_type=validation, dataset_name=validation,
                                 dataset_split="validation", metric_type=name, metric_value=value)
                      for name, value in scores.items()] or None)
    body = "\n".join([
        f"# {Path(cfg.output_dir).name}", "",
        _what(cfg, family, stage), "",
        "## Training data", "",
        _data_line(files, examples), "",
        "## Evaluation", "",
        _table(["metric", "value"], [[k, _number(v)] for k, v in scores.items()]) if scores else "No evaluation ran.", "",
        *_history(log), "",
        "## Training hyperparameters", "",
        _table(["setting", "value"], [[f"train.{k}", getattr(cfg.train, k)] for k in HYPERPARAMETERS]
               + [["seed", cfg.seed]]), "",
        "The full resolved config is `config.yaml` in the run folder.", "",
        "## Usage", "",
        "```python", *_usage(folder, family, mask_token), "```", "",
        "## Framework versions", "",
        *[f"- {name} {version}" for name, version in package_versions().items() if version], "",
    ])
    path = folder / CARD
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(path)
    return path


def _what(cfg: Config, family, stage: str) -> str:
    origin = f"fine-tuned from `{cfg.model.name_or_path}`" if cfg.model.name_or_path else \
        f"trained from scratch ({cfg.model.config['model_type']}, built from model.config)"
    if stage == "pretrain":
        return f"A model {origin} by llmkit's `{cfg.pretrain.objective}` pretraining objective ({family.__name__})."
    return (f"A model {origin} for {cfg.finetune.task.replace('_', ' ')} by llmkit (`finetune.method: "
            f"{cfg.finetune.method}`).")


def _data_line(files: dict, examples: dict) -> str:
    train = f"{examples.get('train', 0):,} training examples from `{Path(files['train']).name}`" if files["train"] \
        else f"{examples.get('train', 0):,} training examples"
    validation = (f"{examples.get('validation', 0):,} validation examples from `{Path(files['validation']).name}`"
                  if files["validation"] else f"{examples.get('validation', 0):,} validation examples held out")
    return (f"It saw {train}, and was scored on {validation}. Nothing else about the data (its source, licence, "
            "biases) is known to llmkit: say it here.")


def _history(log: Path) -> list[str]:
    """Every evaluation during training, from metrics.jsonl."""
    from llmkit.runlog import read_metrics

    evaluations = [row for row in read_metrics(log) if any(k.startswith("eval_") for k in row)]
    if not evaluations:
        return []
    names = [k for k in evaluations[-1] if k.startswith("eval_") and isinstance(evaluations[-1][k], float)][:6]
    return ["### During training", "",
            _table(["step", "epoch", *names], [[e["step"], e.get("epoch"), *(_number(e.get(n)) for n in names)]
                                               for e in evaluations])]


USAGE = {  # pipeline task: (example input, call options)
    "fill-mask": ("the food was [MASK] .", ""),
    "text-generation": ("the food was", ", max_new_tokens=40"),  # the pipeline's default length outruns small models
}


def _usage(folder: Path, family, mask_token: str | None) -> list[str]:
    if family.pipeline_task is None:  # no pipeline for it in the installed transformers: its Auto class
        return family.card_usage(str(folder.resolve()))
    example, options = USAGE.get(family.pipeline_task, ("the food was great .", ""))
    example = example.replace("[MASK]", mask_token or "[MASK]")
    return ["from transformers import pipeline", "",
            f'model = pipeline("{family.pipeline_task}", model="{folder.resolve()}")',
            f'print(model("{example}"{options}))']


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])
