"""`--seeds`: a run per seed in output_dir/seed-<s>/, their statistics in seeds.json and seeds.md, collapsed seeds
flagged, a killed multi-seed run resumed where it stopped, bad --seeds refused, and several seeds in one DDP job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, REPO, read_jsonl, run_cli

FINETUNE = CONFIGS / "tiny" / "finetune.yaml"
QUICK = ["train.logging_steps=1", "train.eval_strategy=no", "train.save_strategy=no"]


def _results(run: Path) -> dict:
    return json.loads((run / "eval_results.json").read_text())


def test_each_seed_runs_in_its_folder_and_seeds_json_holds_their_statistics(tmp_path):
    from llmkit.seed_stats import seed_summary

    out = tmp_path / "seeds"
    result = run_cli("finetune", FINETUNE, "--seeds", "1,2", f"output_dir={out}", "train.max_steps=30",
                     "train.learning_rate=3e-3", *QUICK)
    assert result.exit_code == 0, result.output
    runs = [out / "seed-1", out / "seed-2"]
    assert [yaml.safe_load((run / "config.yaml").read_text())["seed"] for run in runs] == [1, 2]
    assert [yaml.safe_load((run / "config.yaml").read_text())["output_dir"] for run in runs] == list(map(str, runs))

    summary = json.loads((out / "seeds.json").read_text())
    results = [_results(run) for run in runs]
    for name in ("loss", "accuracy", "f1"):
        assert summary[name] == seed_summary([r[name] for r in results]), name
    assert summary["accuracy"]["n"] == 2 and summary["collapsed"] == {}  # 30 steps at 3e-3 learn (~0.9 accuracy)

    table = (out / "seeds.md").read_text()
    accuracy = summary["accuracy"]
    assert "| metric | mean | std | 95% CI | min | max | n |" in table
    assert (f"| accuracy | {accuracy['mean']:.4f} | {accuracy['std']:.4f} | [{accuracy['ci95'][0]:.4f}, "
            f"{accuracy['ci95'][1]:.4f}] | {accuracy['min']:.4f} | {accuracy['max']:.4f} | 2 |") in table
    assert "no seed collapsed" in table
    assert f"seeds 1, 2: loss {summary['loss']['mean']:.4f} ±" in result.output
    assert str(out / "seeds.json") in result.output

    # The second seed, trained after the first in one process, is the run that seed alone makes.
    alone = tmp_path / "alone"
    result = run_cli("finetune", FINETUNE, "seed=2", f"output_dir={alone}", "train.max_steps=30",
                     "train.learning_rate=3e-3", *QUICK)
    assert result.exit_code == 0, result.output
    assert read_jsonl(alone / "metrics.jsonl") != [] and _losses(alone) == _losses(out / "seed-2")
    assert _results(alone) == results[1]


def _losses(run: Path) -> list[tuple]:
    return [(line["step"], line["loss"], line["grad_norm"]) for line in read_jsonl(run / "metrics.jsonl")
            if "loss" in line]


def _write_run(run: Path, results: dict, losses: list[float]) -> Path:
    run.mkdir(parents=True)
    (run / "eval_results.json").write_text(json.dumps(results))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "loss": loss}) + "\n"
                                               for i, loss in enumerate(losses)))
    return run


def _classified(accuracy: float, gold: list[int], prefix: str = "") -> dict:
    """A single-label classifier's results: its accuracy and a confusion matrix whose rows hold `gold`."""
    matrix = [[count if i == j else 0 for j in range(len(gold))] for i, count in enumerate(gold)]
    return {f"{prefix}accuracy": accuracy, f"{prefix}confusion_matrix": {"labels": [], "matrix": matrix}}


@pytest.mark.parametrize("results, losses, expected", [
    (_classified(0.605, [60, 40]), [0.7, 0.5], "accuracy 0.6050 is at or below the majority class's rate 0.6000"),
    (_classified(0.62, [60, 40]), [0.7, 0.5], None),  # more than a point above the majority class
    (_classified(0.9, [60, 40]), [0.7, 0.7], "training loss did not fall: 0.7000 at step 1, 0.7000 at step 2"),
    (_classified(0.405, [30, 30, 40], prefix="sst2_"), [0.7, 0.5], "sst2_accuracy 0.4050 is at or below"),
    ({"accuracy": 0.1, "per_class": {"a": {"support": 90}}}, [0.9, 0.4], None),  # multi-label: no majority rate
    ({"pearson": 0.1}, [0.9], None),  # one logged loss shows no trend
])
def test_collapsed_seeds_are_flagged_with_the_reason(tmp_path, results, losses, expected):
    from llmkit.seeds import collapse_reason

    reason = collapse_reason(_write_run(tmp_path / "run", results, losses))
    if expected is None:
        assert reason is None, reason
    else:
        assert reason is not None and reason.startswith(expected), reason


def test_a_killed_multi_seed_run_resumes_at_the_seed_and_step_it_reached(tmp_path):
    out = tmp_path / "seeds"
    args = ["finetune", FINETUNE, "--seeds", "1,2,3", f"output_dir={out}", "train.max_steps=4",
            "train.logging_steps=1", "train.eval_strategy=no", "train.save_strategy=steps", "train.save_steps=2"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    # As a kill during seed 2's third step leaves it: seed 1 finished, seed 2 with its step-2 checkpoint and no
    # final model, seed 3 not started.
    seed_1, seed_2, seed_3 = (out / f"seed-{seed}" for seed in (1, 2, 3))
    for name in ("trainer_state.json", "model.safetensors", "eval_results.json"):
        (seed_2 / name).unlink()
    subprocess.run(["rm", "-r", str(seed_3), str(out / "seeds.json")], check=True)
    finished_at = (seed_1 / "model.safetensors").stat().st_mtime_ns

    result = run_cli(*args, "train.resume_from_checkpoint=latest")
    assert result.exit_code == 0, result.output
    assert f"{seed_1} holds a run that already finished (step 4)" in result.output
    assert f"resume from {seed_2 / 'checkpoint-2'} at step 2: exact" in result.output
    assert f"no checkpoint in {seed_3} yet, starting from scratch" in result.output
    assert (seed_1 / "model.safetensors").stat().st_mtime_ns == finished_at
    for run in (seed_2, seed_3):
        assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 4
    assert json.loads((seed_2 / "run_info.json").read_text())["resumed_from"] == str(seed_2 / "checkpoint-2")
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["loss"]["n"] == 3
    # Four steps teach the tiny classifier nothing: it predicts one class (the sample's dev set is 51.7% negative).
    assert sorted(summary["collapsed"]) == ["1", "2", "3"]
    assert all("the majority class's rate 0.5167" in why for why in summary["collapsed"].values())
    assert "- seed 2 collapsed: accuracy" in (out / "seeds.md").read_text()
    assert "  seed 2 collapsed: accuracy" in result.output


@pytest.mark.parametrize("seeds, message", [
    ("1,x", "error: --seeds: 'x' is not a seed"),
    ("1,,2", "error: --seeds: '' is not a seed"),
    ("-1", "error: --seeds: '-1' is not a seed"),
    ("3,1,3", "error: --seeds: 3 given twice"),
])
def test_bad_seeds_are_one_error_line(tmp_path, seeds, message):
    result = run_cli("finetune", FINETUNE, "--seeds", seeds, f"output_dir={tmp_path / 'out'}")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "out").exists()


def test_seeds_into_the_folder_of_a_single_run_are_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n')
    result = run_cli("finetune", FINETUNE, "--seeds", "1,2", f"output_dir={out}")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: output_dir: {out} holds a run trained without --seeds (metrics.jsonl)")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]


def test_several_seeds_train_in_one_torchrun_job(tmp_path):
    """The seeds share the job's process group: torch cannot reliably set up a second one after the first."""
    out = tmp_path / "seeds"
    assert run_cli("preprocess", CONFIGS / "tiny" / "pretrain.yaml").exit_code == 0  # both ranks read the cache
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571",
         "-m", "llmkit", "pretrain", str(CONFIGS / "tiny" / "pretrain.yaml"), "--seeds", "1,2", f"output_dir={out}",
         "train.max_steps=3", "train.eval_steps=3", "train.save_steps=3", "train.per_device_train_batch_size=16",
         "data.max_eval_samples=4"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for seed in (1, 2):
        info = json.loads((out / f"seed-{seed}" / "run_info.json").read_text())
        assert info["num_processes"] == 2 and info["status"] == "finished"
    assert json.loads((out / "seeds.json").read_text())["loss"]["n"] == 2
    assert proc.stdout.count("seeds 1, 2: loss") == 1  # the main process speaks
