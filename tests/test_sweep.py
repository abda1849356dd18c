"""`llmkit sweep`: a grid (with and without seeds) and an Optuna search train a run per trial in trial-<k>/, rank
them in sweep.md, write the best trial's config as best.yaml (which validates as it is), and a rerun trains nothing
that finished; bad grids and spaces are refused before anything trains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, run_cli

FINETUNE = CONFIGS / "tiny" / "finetune.yaml"
QUICK = ["train.logging_steps=1", "train.eval_strategy=no", "train.save_strategy=no"]
GRID = ["--grid", "train.learning_rate=1e-5,3e-3"]
SPACE = "train.learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}\ntrain.warmup_ratio: [0.0, 0.1]\n"


def _sweep(out: Path, *args):
    return run_cli("sweep", FINETUNE, f"output_dir={out}", *QUICK, *args)


def _ranked(table: Path) -> list[str]:
    """The trials in the order sweep.md ranks them."""
    return [re.search(r"trial-\d+", line)[0] for line in table.read_text().splitlines() if line.startswith("| `")]


def _trial_config(out: Path, name: str) -> dict:
    return yaml.safe_load((out / name / "config.yaml").read_text())


def _model_times(out: Path) -> dict:
    return {path: path.stat().st_mtime_ns for path in out.glob("trial-*/**/model.safetensors")}


def test_a_grid_trains_each_point_ranks_them_and_writes_the_best_config(tmp_path):
    from llmkit.config import load_config

    out = tmp_path / "sweep"
    result = _sweep(out, "train.max_steps=10", *GRID)
    assert result.exit_code == 0, result.output
    rates = {name: _trial_config(out, name)["train"]["learning_rate"] for name in ("trial-0", "trial-1")}
    assert rates == {"trial-0": 1e-5, "trial-1": 3e-3}
    losses = {name: json.loads((out / name / "eval_results.json").read_text())["loss"] for name in rates}
    assert _ranked(out / "sweep.md") == sorted(losses, key=losses.get)  # loss: lower first
    assert (out / "sweep.png").exists()
    best = min(losses, key=losses.get)
    given = {"trial-0": "1e-5", "trial-1": "3e-3"}  # as on the command line
    assert f"best: {best} (train.learning_rate={given[best]})" in result.output

    cfg = load_config(out / "best.yaml", stage="finetune")
    assert cfg.train.learning_rate == rates[best] and cfg.output_dir == str(out / "best")
    assert f"#   llmkit finetune {out / 'best.yaml'}" in (out / "best.yaml").read_text()
    checked = run_cli("validate", out / "best.yaml")
    assert checked.exit_code == 0 and f"{out / 'best.yaml'}: valid" in checked.output, checked.output

    trained = _model_times(out)
    assert len(trained) == 2
    again = _sweep(out, "train.max_steps=10", *GRID)
    assert again.exit_code == 0, again.output
    assert again.output.count("holds a run that already finished") == 2
    assert _model_times(out) == trained  # nothing trained again
    changed = _sweep(out, "train.max_steps=10", "--grid", "train.learning_rate=1e-5,1e-3")
    assert changed.exit_code == 2 and "this trial ran with train.learning_rate=3e-3" in changed.output


def test_a_grid_with_seeds_ranks_each_trial_by_the_worse_end_of_its_interval(tmp_path):
    from llmkit.config import load_config

    out = tmp_path / "sweep"
    result = _sweep(out, "train.max_steps=3", *GRID, "--seeds", "1,2")
    assert result.exit_code == 0, result.output
    upper = {}
    for name in ("trial-0", "trial-1"):
        assert sorted(path.name for path in (out / name).glob("seed-*")) == ["seed-1", "seed-2"]
        assert [_trial_config(out / name, f"seed-{s}")["seed"] for s in (1, 2)] == [1, 2]
        upper[name] = json.loads((out / name / "seeds.json").read_text())["loss"]["ci95"][1]
    assert _ranked(out / "sweep.md") == sorted(upper, key=upper.get)
    assert "(2 seeds)" in (out / "sweep.md").read_text()
    best = load_config(out / "best.yaml", stage="finetune")
    best_trial = min(upper, key=upper.get)
    assert best.seed == 42  # the config's: the seeds are --seeds
    assert best.train.learning_rate == _trial_config(out / best_trial, "seed-1")["train"]["learning_rate"]
    assert (out / "best.yaml").read_text().splitlines()[1].endswith("best.yaml --seeds 1,2")


def test_a_sweep_of_a_pretraining_config_pretrains(tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("sweep", CONFIGS / "tiny" / "pretrain.yaml", f"output_dir={out}", "train.max_steps=2",
                     "train.eval_steps=2", "train.save_steps=2", "--grid", "pretrain.mlm_probability=0.2")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "trial-0" / "run_info.json").read_text())["stage"] == "pretrain"
    assert "#   llmkit pretrain " in (out / "best.yaml").read_text()


def test_an_optuna_search_trains_its_trials_and_continues_its_study_after_a_kill(tmp_path, monkeypatch):
    import optuna

    from llmkit.config import load_config
    from llmkit.stages import finetune

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "search"
    result = _sweep(out, "train.max_steps=3", "--trials", "2", "--space", space, "--sampler", "random")
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="llmkit-sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in study.trials:
        train = _trial_config(out, f"trial-{trial.number}")["train"]
        assert train["learning_rate"] == trial.params["train.learning_rate"]
        assert train["warmup_ratio"] == trial.params["train.warmup_ratio"]
        results = json.loads((out / f"trial-{trial.number}" / "eval_results.json").read_text())
        assert trial.value == results["loss"]
    best = min(study.trials, key=lambda trial: trial.value)
    assert load_config(out / "best.yaml", stage="finetune").train.learning_rate == best.params["train.learning_rate"]
    assert len(_ranked(out / "sweep.md")) == 2

    # Stopped during a third trial; the rerun trains that trial with its parameters, draws no fourth, and leaves
    # the first two as they are.
    trained, train = _model_times(out), finetune.run
    monkeypatch.setattr(finetune, "run", lambda cfg, path: (_ for _ in ()).throw(KeyboardInterrupt)
                        if cfg.output_dir.endswith("trial-2") else train(cfg, path))
    args = ["train.max_steps=3", "--trials", "3", "--space", space, "--sampler", "random"]
    assert _sweep(out, *args).exit_code == 130
    monkeypatch.undo()
    left = optuna.load_study(study_name="llmkit-sweep", storage=f"sqlite:///{out / 'optuna.db'}").trials[2]
    assert left.state == optuna.trial.TrialState.RUNNING

    result = _sweep(out, *args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="llmkit-sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert _trial_config(out, "trial-2")["train"]["learning_rate"] == left.params["train.learning_rate"]
    assert not (out / "trial-3").exists() and len(_ranked(out / "sweep.md")) == 3
    assert {path: time for path, time in _model_times(out).items() if path in trained} == trained


@pytest.mark.parametrize("args, message", [
    (["--grid", "train.learning_rate"], "error: --grid 'train.learning_rate': expected KEY=VALUE1,VALUE2"),
    (["--grid", "seed=1,2"], "error: --grid seed: a sweep cannot vary it: give the seeds with --seeds"),
    (["--grid", "train.learning_rate=1e-5,,1e-4"], "error: --grid train.learning_rate: '1e-5,,1e-4' has an empty"),
    (["--grid", "train.learning_rate=1e-5", "--grid", "train.learning_rate=1e-4"], "given twice"),
    (["--grid", "train.learnig_rate=1e-5,1e-4"], "train.learnig_rate: unknown key (from a command-line override) "
                                                 "(did you mean train.learning_rate?)"),
    (["--grid", "train.learning_rate=1e-5,oops"], "train.learning_rate: Input should be a valid number"),
    (["--grid", "train.learning_rate=1e-5", "--trials", "2"], "error: --grid and --trials"),
    (["--trials", "2"], "error: sweep: give --grid KEY=V1,V2,... (a grid), or --trials N with --space FILE"),
    (["--grid", "train.learning_rate=1e-5", "--seeds", "1,1"], "error: --seeds: 1 given twice"),
    (["--trials", "2", "--space", "{tmp}/missing.yaml"], "error: --space: {tmp}/missing.yaml does not exist"),
    (["--trials", "2", "--space", "{tmp}/space.yaml", "--sampler", "grid"], "error: --sampler: 'grid' is not one of"),
])
def test_bad_sweeps_are_refused_before_anything_trains(tmp_path, args, message):
    (tmp_path / "space.yaml").write_text(SPACE)
    result = _sweep(tmp_path / "sweep", *(arg.replace("{tmp}", str(tmp_path)) for arg in args))
    assert result.exit_code == 2, result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("space, message", [
    ("train.learning_rate: {low: 1.0e-3}", "error: --space train.learning_rate: expected {low: ..., high: ...}"),
    ("train.learning_rate: {low: 0.0, high: 1.0, log: true}", "error: --space train.learning_rate: "),
    ("train.learning_rate: {low: small, high: 1.0}", "low and high are numbers, got 'small'"),
    ("train.learnig_rate: [1.0e-3, 1.0e-4]", "train.learnig_rate: unknown key (from a command-line override)"),
    ("train.per_device_train_batch_size: {low: 0.5, high: 8}", "train.per_device_train_batch_size: Input should be"),
    ("output_dir: [a, b]", "error: --space output_dir: a sweep cannot vary it"),
    ("[1, 2]", "error: --space: {tmp}/space.yaml: expected config keys"),
])
def test_a_bad_search_space_is_one_error_naming_its_key(tmp_path, space, message):
    (tmp_path / "space.yaml").write_text(space + "\n")
    result = _sweep(tmp_path / "sweep", "--trials", "2", "--space", tmp_path / "space.yaml")
    assert result.exit_code == 2, result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "sweep").exists()


def test_a_trial_whose_loss_diverges_is_a_failed_row_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "sweep"
    result = _sweep(out, "train.max_steps=3", "train.warmup_ratio=0", "--grid", "train.learning_rate=1e12,1e-3")
    assert result.exit_code == 0, result.output
    assert "trial-0 failed: step 2: the loss is nan" in result.output and "the sweep goes on" in result.output
    assert json.loads((out / "trial-1" / "trainer_state.json").read_text())["finished"]  # trained after the failure
    assert _ranked(out / "sweep.md") == ["trial-1", "trial-0"]
    assert "`" + str(out / "trial-0") + "` (failed)" in (out / "sweep.md").read_text()
    assert "best: trial-1" in result.output
