"""The `llmkit` command: wires each subcommand to its stage and turns user errors into one line + exit 2.

    llmkit STAGE CONFIG.yaml [key.sub=value ...] [--debug]
"""

from __future__ import annotations

import contextlib
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
SEEDS = typer.Option(None, "--seeds", metavar="S1,S2,...", show_default=False,
                     help="One run per seed, in output_dir/seed-<s>/, then each metric's mean, std and 95% interval "
                          "over them in output_dir/seeds.json and seeds.md.")


def _run(stage: str, config: Path, overrides: Optional[list[str]], debug: bool, action) -> None:
    from llmkit.config import load_config

    _quiet_libraries(debug)
    try:
        with one_line_errors(debug):
            action(load_config(config, overrides or [], stage=stage))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


@contextlib.contextmanager
def one_line_errors(debug: bool):
    """A user's error (LlmkitError) becomes one `error: ...` line and its exit code; --debug adds the traceback."""
    try:
        yield
    except LlmkitError as e:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None


def _each_seed(seeds: Optional[str], run):
    """The stage's run, or with --seeds one run per seed (llmkit.seeds); a bad --seeds is an error like a config's."""
    if seeds is None:
        return run
    from llmkit.seeds import parse_seeds, run_seeds

    return lambda cfg: run_seeds(cfg, parse_seeds(seeds), run)


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
def pretrain(config: Path = CONFIG, overrides: Optional[list[str]] = OVERRIDES, seeds: Optional[str] = SEEDS,
             debug: bool = DEBUG):
    """Pretrain with a self-supervised objective (pretrain.objective: mlm, mlm+nsp, mlm+sop, clm, contrastive,
    span_corruption); preprocesses first if needed."""
    from llmkit.stages import pretrain as stage

    _run("pretrain", config, overrides, debug, _each_seed(seeds, lambda cfg: stage.run(cfg, str(config))))


@app.command()
def finetune(config: Path = CONFIG, overrides: Optional[list[str]] = OVERRIDES, seeds: Optional[str] = SEEDS,
             debug: bool = DEBUG):
    """Fine-tune on labelled data (finetune.task: sequence_classification, regression, multi_label_classification,
    token_classification, question_answering, multiple_choice, seq2seq; finetune.method: full, freeze, lora,
    prompt)."""
    from llmkit.stages import finetune as stage

    _run("finetune", config, overrides, debug, _each_seed(seeds, lambda cfg: stage.run(cfg, str(config))))


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
def export(output_dir: Path = typer.Argument(..., help="A trained run folder (llmkit's output_dir).",
                                             show_default=False),
           fmt: str = typer.Option(..., "--format", help="onnx"),
           quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: ONNX Runtime's dynamic int8 "
                                                                           "(per-channel weights)."),
           to: Optional[Path] = typer.Option(None, "--to", help="Folder to write (default: OUTPUT_DIR/onnx)."),
           debug: bool = DEBUG):
    """Export a trained model for ONNX Runtime: model.onnx with its tokenizer, config and a card, checked against
    torch; `llmkit infer CONFIG output_dir=<folder> infer.backend=onnxruntime` runs it without torch."""
    from llmkit.stages import export as stage

    _quiet_libraries(debug)
    with one_line_errors(debug):
        stage.run(output_dir, fmt, quantize, to)


@app.command("config")
def show_config(config: Path = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
                explain: bool = typer.Option(False, "--explain", help="Follow each value with the file it came from, "
                                                                      "`override` or `default`."),
                debug: bool = DEBUG):
    """Print the resolved config: bases merged, overrides applied, every default filled in (as a run saves it)."""
    from llmkit.config.explain import config_text

    with one_line_errors(debug):
        typer.echo(config_text(config, overrides or [], explain), nl=False)


@app.command()
def report(output_dir: Path = typer.Argument(..., help="A run folder (llmkit's output_dir).", show_default=False),
           debug: bool = DEBUG):
    """Write (again) a run's report: output_dir/report.md with plots under output_dir/plots/."""
    from llmkit.report import write_report

    _quiet_libraries(debug)
    with one_line_errors(debug):
        typer.echo(f"report: {write_report(output_dir)}")


@app.command()
def compare(run_dirs: Optional[list[Path]] = typer.Argument(None, show_default=False, metavar="RUN_DIR",
                                                            help="Run folders (llmkit's output_dir), or seed groups: "
                                                                 "folders of seed-*/ runs, shown as one row."),
            output: Path = typer.Option(Path("compare.md"), "--output", "-o",
                                        help="Markdown file to write; the curves PNG goes beside it (compare.png)."),
            metric: Optional[str] = typer.Option(None, "--metric", help="Rank by this metric of eval_results.json "
                                                 "(default: train.metric_for_best_model, else loss)."),
            debug: bool = DEBUG):
    """Compare runs in one Markdown table (final evaluation, steps, wall time, the config keys that differ) and
    one PNG of their curves; prints the table."""
    from llmkit.compare import compare_runs, curves_path

    with one_line_errors(debug):
        typer.echo(compare_runs(run_dirs or [], output, metric), nl=False)
    # stderr, so that stdout is the Markdown alone (`llmkit compare a b > pr.md`)
    typer.echo(f"compare: {output}, {curves_path(output)}", err=True)


@app.command()
def sweep(config: Path = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
          grid: Optional[list[str]] = typer.Option(None, "--grid", metavar="KEY=V1,V2,...", show_default=False,
                                                   help="A config key's values, a trial each; several --grid: "
                                                        "every combination."),
          trials: Optional[int] = typer.Option(None, "--trials", min=1, show_default=False,
                                               help="Optuna search: this many trials in all (with --space)."),
          space: Optional[Path] = typer.Option(None, "--space", show_default=False,
                                               help="Optuna search space (YAML): KEY: {low, high, log: true} or a "
                                                    "list of choices."),
          sampler: Optional[str] = typer.Option(None, "--sampler", show_default=False,
                                                help="Optuna sampler: tpe (default) or random, seeded by the "
                                                     "config's seed."),
          seeds: Optional[str] = typer.Option(None, "--seeds", metavar="S1,S2,...", show_default=False,
                                              help="A run per seed in each trial, in trial-<k>/seed-<s>/; a trial "
                                                   "then ranks by the worse end of its 95% interval."),
          debug: bool = DEBUG):
    """Train a run per trial (a grid, or an Optuna search) into output_dir/trial-<k>/, rank them in
    output_dir/sweep.md and write the best one's config to output_dir/best.yaml; the stage is the config's kind."""
    from llmkit.sweep import run_sweep, stage_of

    with one_line_errors(debug):
        stage = stage_of(config, overrides or [])
    _run(stage, config, overrides, debug, lambda cfg: run_sweep(
        cfg, str(config), overrides or [], grids=grid or [], trials=trials, space=space, sampler=sampler, seeds=seeds))


@app.command()
def validate(targets: list[str] = typer.Argument(..., show_default=False, metavar="CONFIG... [KEY=VALUE...]",
                                                 help="Configs (a shell glob works), then overrides for each."),
             as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
             processes: Optional[int] = typer.Option(None, "--processes", min=1,
                                                     help="Processes to plan for (default: WORLD_SIZE, else 1)."),
             debug: bool = DEBUG):
    """Check configs without training or writing anything: every problem at once, facts about the data (rows,
    labels, duplicates, token lengths) and the plan (parameters, steps, memory per device). Exit 2 if any fails."""
    from llmkit.stages import validate as stage

    _quiet_libraries(debug)
    with one_line_errors(debug):
        code = stage.run(targets, processes, as_json)
    raise typer.Exit(code)


@app.command()
def rehearse(config: Path = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
             steps: int = typer.Option(5, "--steps", min=1, help="Training steps on the longest batches (and as "
                                                                 "many on the run's own first batches)."),
             phase_timeout: str = typer.Option("10m", "--phase-timeout", help="Fail a phase that runs longer "
                                                                              "(90s, 10m, 1h)."),
             debug: bool = DEBUG):
    """A short dry run on the real launcher and devices: steps on the longest batches, an evaluation, a checkpoint
    saved and reloaded, a barrier; prints peak memory, tokens/s, padding and the run's ETA. output_dir is not touched."""
    from llmkit.stages import rehearse as stage

    _run("rehearse", config, overrides, debug, lambda cfg: stage.run(cfg, str(config), steps, phase_timeout))


def main() -> None:
    app(prog_name="llmkit")


if __name__ == "__main__":
    sys.exit(main())
