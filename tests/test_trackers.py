"""Trackers (train.report_to): TensorBoard and MLflow get every metrics.jsonl record at its step, the config as
hyperparameters, offline in output_dir; a resumed run continues the same tracker run without a step twice."""

from __future__ import annotations

import json

import pytest

from conftest import CONFIGS, read_jsonl, run_cli

FINETUNE = CONFIGS / "tiny" / "finetune.yaml"
TRACKED = ["train.report_to=[tensorboard,mlflow]", "train.max_steps=8", "train.logging_steps=1",
           "train.eval_strategy=steps", "train.eval_steps=4", "train.save_strategy=steps", "train.save_steps=4",
           "data.max_train_samples=512", "data.max_eval_samples=64"]


def _tensorboard(out) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "runs" / out.name))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _mlflow(out) -> tuple[dict, dict[str, list[tuple[int, float]]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    run_id = json.loads((out / "trackers.json").read_text())["mlflow"]
    run = client.get_run(run_id)
    return run.data.params, {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
                             for key in run.data.metrics}


def _logged(out) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as tag -> [(step, value)], as the trackers should have it."""
    series: dict[str, list] = {}
    for record in read_jsonl(out / "metrics.jsonl"):
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                series.setdefault(key, []).append((record["step"], value))
    return series


def test_tensorboard_and_mlflow_get_every_record(tmp_path):
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path}", *TRACKED)
    assert result.exit_code == 0, result.output
    logged = _logged(tmp_path)
    assert [s for s, _ in logged["loss"]] == list(range(1, 9)) and [s for s, _ in logged["eval_accuracy"]] == [4, 8]
    board = _tensorboard(tmp_path)
    for tag in ("loss", "learning_rate", "eval_loss", "eval_accuracy", "eval_f1"):
        assert board[tag] == [(s, pytest.approx(v, rel=1e-6)) for s, v in logged[tag]], tag
    params, metrics = _mlflow(tmp_path)
    assert params["train.learning_rate"] == "0.001" and params["finetune.task"] == "sequence_classification"
    for tag in ("loss", "eval_loss", "eval_accuracy"):
        assert metrics[tag] == [(s, pytest.approx(v, rel=1e-9)) for s, v in logged[tag]], tag
    assert not any(p.name in ("mlruns", "mlflow.db") for p in tmp_path.parent.iterdir() if p != tmp_path)


def test_a_resumed_run_continues_its_tracker_runs_without_a_step_twice(tmp_path, monkeypatch):
    from llmkit.objectives import SequenceClassification

    real, calls = SequenceClassification.loss, {"n": 0}

    def loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 7 + 2:  # step 7, after checkpoint-4 (whose evaluation took 2 batches)
            raise KeyboardInterrupt
        return real(self, model, batch)

    monkeypatch.setattr(SequenceClassification, "loss", loss)
    assert run_cli("finetune", FINETUNE, f"output_dir={tmp_path}", *TRACKED).exit_code == 130
    monkeypatch.setattr(SequenceClassification, "loss", real)
    _, before = _mlflow(tmp_path)
    assert [s for s, _ in before["loss"]] == [1, 2, 3, 4, 5, 6]  # steps 5 and 6 were logged before the crash
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path}", *TRACKED, "train.resume_from_checkpoint=latest")
    assert result.exit_code == 0, result.output
    logged = _logged(tmp_path)
    board = _tensorboard(tmp_path)
    _, metrics = _mlflow(tmp_path)
    for tag in ("loss", "eval_loss"):
        assert [s for s, _ in board[tag]] == [s for s, _ in logged[tag]] == [s for s, _ in metrics[tag]], tag
    assert [s for s, _ in metrics["loss"]] == list(range(1, 9))


def test_a_tracker_that_is_not_installed_fails_at_load(tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path}", "train.report_to=wandb")
    assert result.exit_code == 2 and "train.report_to: wandb is not installed: pip install 'llmkit[wandb]'" in result.output


def test_sigkill_then_resume_logs_no_tracker_step_twice(tmp_path):
    """A real kill (no clean-up runs) after checkpoint-22 of 60: both trackers end with each step once."""
    from test_resume import finish, kill_after, llmkit

    out = tmp_path / "run"
    trackers = "train.report_to=[tensorboard,mlflow]"
    proc = llmkit("pretrain", out, trackers)
    kill_after(proc, out / "checkpoint-22")
    proc.wait(timeout=60)
    assert proc.returncode == -9
    finish(llmkit("pretrain", out, trackers, "train.resume_from_checkpoint=latest"))
    logged = _logged(out)
    board = _tensorboard(out)
    _, metrics = _mlflow(out)
    assert [s for s, _ in logged["loss"]] == list(range(1, 61))
    for tag in ("loss", "eval_loss"):
        assert [s for s, _ in board[tag]] == [s for s, _ in metrics[tag]] == [s for s, _ in logged[tag]], tag
    assert [v for _, v in metrics["loss"]] == pytest.approx([v for _, v in logged["loss"]], rel=1e-9)
