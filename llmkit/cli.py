"""The `llmkit` command: wires each subcommand to its stage and turns user errors into one line + exit 2.

    llmkit STAGE CONFIG.yaml [key.sub=value ...] [--debug]
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

from llmkit.completion import complete_override
from llmkit.errors import EXIT_INTERRUPTED, LlmkitError

app = typer.Typer(
    help="Pretrain and fine-tune Hugging Face transformer models from YAML configs.",
    no_args_is_help=True, pretty_exceptions_enable=False,
)

CONFIG = typer.Argument(..., help="Experiment config (YAML).", show_default=False)
OVERRIDES = typer.Argument(None, help="key.sub=value overrides, e.g. train.learning_rate=1e-4", show_default=False,
                           autocompletion=complete_override)
DEBUG = typer.Option(False, "--debug", help="Show the full traceback of an error.")


def _run(stage: str, config: Path, overrides: Optional[list[str]], debug: bool, action) -> None:
    from llmkit.config import load_config

    _quiet_libraries(debug)
    try:
        cfg = load_config(config, overrides or [], stage=stage)
        action(cfg)
    except LlmkitError as e:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _quiet_libraries(debug: bool) -> None:
    """Library chatter (download bars, init notices) drowns our own output unless debugging."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if debug:
        return
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # datasets reads these when imported (not at all by `infer` on text input: 0.75 s saved)
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "datasets" in sys.modules:  # imported already (tests run every command in one process)
        sys.modules["datasets"].logging.set_verbosity_error()
        sys.modules["datasets"].disable_progress_bars()


@app.command()
def preprocess(config: Path = CONFIG, overrides: Optional[list[str]] = OVERRIDES, debug: bool = DEBUG):
    """Clean, tokenize and pack the pretraining corpus into the cache (training a tokenizer if asked)."""
    from llmkit.stages import preprocess as stage

    _run("preprocess", config, overrides, debug, stage.run)


@app.command()
def pretrain(config: Path = CONFIG, overrides: Optional[list[str]] = OVERRIDES, debug: bool = DEBUG):
    """Pretrain with a self-supervised objective (pretrain.objective: mlm, mlm+nsp, mlm+sop, clm, contrastive);
    preprocesses first if needed."""
    from llmkit.stages import pretrain as stage

    _run("pretrain", config, overrides, debug, lambda cfg: stage.run(cfg, str(config)))


@app.command()
def finetune(config: Path = CONFIG, overrides: Optional[list[str]] = OVERRIDES, debug: bool = DEBUG):
    """Fine-tune on labelled data (finetune.task: sequence_classification, regression, multi_label_classification,
    token_classification; finetune.method: full, freeze, lora, prompt)."""
    from llmkit.stages import finetune as stage

    _run("finetune", config, overrides, debug, lambda cfg: stage.run(cfg, str(config)))


@app.command()
def evaluate(config: Path = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
             split: str = typer.Option("validation", help="validation or test"),
             save_predictions: bool = typer.Option(False, "--save-predictions",
                                                   help="Also write each example's inputs, gold and predicted label "
                                                        "(and score) to eval_predictions.jsonl / test_predictions.jsonl."),
             debug: bool = DEBUG):
    """Score the trained model in output_dir (or model.name_or_path); writes eval_results.json / test_results.json."""
    from llmkit.stages import evaluate as stage

    if split not in ("validation", "test"):
        typer.echo(f"error: --split: {split!r} is not one of validation, test", err=True)
        raise typer.Exit(2)
    _run("evaluate", config, overrides, debug, lambda cfg: stage.run(cfg, split, save_predictions))


@app.command()
def infer(config: Path = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
          input: str = typer.Option(..., "--input", "-i", help="Texts: .txt (one per line), .jsonl, .csv, .tsv, or - for stdin."),
          output: Optional[str] = typer.Option(None, "--output", "-o", help="JSONL file to write (default: stdout)."),
          batch_size: int = typer.Option(64, "--batch-size", min=1, help="Texts per forward pass."),
          top_k: int = typer.Option(5, "--top-k", min=1, help="Fill-mask: candidates per mask token."),
          task: Optional[str] = typer.Option(None, "--task", help="Multi-task config: the task to predict."),
          debug: bool = DEBUG):
    """Predict with the trained model (labels, scores, tags, fill-mask candidates, generated text), or use one
    untrained (infer.task: embed, zero_shot)."""
    from llmkit.stages import infer as stage

    _run("infer", config, overrides, debug, lambda cfg: stage.run(cfg, input, output, batch_size, top_k, task))


@app.command()
def report(output_dir: Path = typer.Argument(..., help="A run folder (llmkit's output_dir).", show_default=False),
           debug: bool = DEBUG):
    """Write (again) a run's report: output_dir/report.md with plots under output_dir/plots/."""
    from llmkit.report import write_report

    _quiet_libraries(debug)
    try:
        typer.echo(f"report: {write_report(output_dir)}")
    except LlmkitError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None


def main() -> None:
    app(prog_name="llmkit")


if __name__ == "__main__":
    sys.exit(main())
