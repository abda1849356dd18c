"""The best model kept (train.load_best_model_at_end) and early stopping, through the CLI on the tiny classifier.
Ranking by the *highest* loss makes the best evaluation the first one, so which step wins is known."""

from __future__ import annotations

import json

import pytest

from conftest import CONFIGS, read_jsonl, run_cli

FINETUNE = CONFIGS / "tiny" / "finetune.yaml"
WORST_IS_BEST = ["train.metric_for_best_model=loss", "train.greater_is_better=true", "train.eval_strategy=steps",
                 "train.eval_steps=4", "train.save_strategy=steps", "train.save_steps=4", "train.logging_steps=1",
                 "data.max_train_samples=640", "data.max_eval_samples=64", "train.save_total_limit=1"]


def _finetune(out, *overrides):
    result = run_cli("finetune", FINETUNE, f"output_dir={out}", *WORST_IS_BEST, *overrides)
    assert result.exit_code in (0, 130), result.output + repr(result.exception)
    return result


def test_the_final_model_is_the_best_checkpoints(tmp_path):
    from safetensors.torch import load_file

    result = _finetune(tmp_path, "train.max_steps=12", "train.load_best_model_at_end=true")
    assert "the final model is checkpoint-4's" in result.output
    final, best = load_file(tmp_path / "model.safetensors"), load_file(tmp_path / "checkpoint-4" / "model.safetensors")
    assert final.keys() == best.keys() and all(final[k].equal(best[k]) for k in final)
    evaluations = [line for line in read_jsonl(tmp_path / "metrics.jsonl") if "eval_loss" in line]
    assert [e["step"] for e in evaluations] == [4, 8, 12]
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["loss"] == evaluations[0]["eval_loss"] and results["accuracy"] == evaluations[0]["eval_accuracy"]
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["best_step"] == 4 and state["best_checkpoint"] == "checkpoint-4" and state["global_step"] == 12
    assert (tmp_path / "checkpoint-4").is_dir()  # the best checkpoint outlives save_total_limit


def test_early_stopping_stops_at_the_patience_and_resumes_exactly(tmp_path, monkeypatch):
    from llmkit.objectives import SequenceClassification

    stopping = ["train.max_steps=40", "train.early_stopping_patience=2"]
    result = _finetune(tmp_path / "baseline", *stopping)
    state = json.loads((tmp_path / "baseline" / "trainer_state.json").read_text())
    # Evaluations at 4 (best), 8 and 12 (no better): patience 2 runs out at step 12, as a finished run.
    assert state["stopped_by"] == "early_stopping" and state["global_step"] == 12 and state["finished"]
    assert "early stopping at step 12" in result.output and (tmp_path / "baseline" / "model.safetensors").exists()

    real, calls = SequenceClassification.loss, {"n": 0}

    def loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 11 + 2 * 1:  # step 11, after checkpoint-8 (each evaluation adds its own batches)
            raise KeyboardInterrupt
        return real(self, model, batch)

    monkeypatch.setattr(SequenceClassification, "loss", loss)
    assert _finetune(tmp_path / "run", *stopping).exit_code == 130
    monkeypatch.setattr(SequenceClassification, "loss", real)
    resumed = _finetune(tmp_path / "run", *stopping, "train.resume_from_checkpoint=latest")
    assert "at step 8" in resumed.output
    def logged(out):  # everything but the throughput, which the machine decides
        return [{k: v for k, v in line.items() if k != "tokens_per_s"} for line in read_jsonl(out / "metrics.jsonl")]

    assert logged(tmp_path / "run") == logged(tmp_path / "baseline")
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["global_step"] == 12


@pytest.mark.parametrize("overrides,message", [
    (["train.load_best_model_at_end=true", "train.eval_strategy=epoch", "train.save_strategy=steps"],
     "load_best_model_at_end needs save_strategy equal to eval_strategy"),
    (["train.load_best_model_at_end=true", "train.eval_strategy=steps", "train.save_strategy=steps",
      "train.eval_steps=5", "train.save_steps=10"], "load_best_model_at_end needs save_steps (10) equal to eval_steps (5)"),
    (["train.early_stopping_patience=3", "train.eval_strategy=no"], "early_stopping_patience counts evaluations"),
])
def test_settings_that_cannot_work_fail_at_load(overrides, message, tmp_path):
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path}", *overrides)
    assert result.exit_code == 2 and message in result.output and not tmp_path.joinpath("config.yaml").exists()
