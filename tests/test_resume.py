"""Kill a run (SIGKILL, during a save, SIGTERM/SIGINT), resume it, and get exactly the uninterrupted run:
bitwise-identical final weights and the same per-step losses."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

import forked
from conftest import CONFIGS, REPO, read_jsonl, run_cli

# Pretraining: 44 steps per epoch. Checkpoints at 22 (mid-epoch) and 44 (an epoch boundary).
# Fine-tuning: 63 steps per epoch. Checkpoints at 21, 42 (mid-epoch) and 63 (an epoch boundary).
# Both on a narrower model than the tiny configs' (hidden 32): the steps cost a tenth, the code paths are the same.
NARROW = ["model.config.hidden_size=32", "model.config.intermediate_size=64"]
RUNS = {
    "pretrain": (CONFIGS / "tiny" / "pretrain.yaml",
                 ["train.max_steps=60", "train.save_steps=22", "train.eval_steps=22", "train.save_total_limit=null",
                  *NARROW]),
    "finetune": (CONFIGS / "tiny" / "finetune.yaml",
                 ["train.max_steps=75", "train.save_strategy=steps", "train.save_steps=21",
                  "train.eval_strategy=steps", "train.eval_steps=21", "train.save_total_limit=null", *NARROW]),
}
COMMON = ["train.logging_steps=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # one thread: same math in every process


def llmkit(stage: str, out: Path, *extra: str, prelude: str = "") -> forked.Run:
    """`llmkit STAGE ...` in a process of its own (optionally after some Python, e.g. a patch)."""
    config, overrides = RUNS[stage]
    return forked.start([stage, str(config), f"output_dir={out}", *overrides, *COMMON, *extra], ENV, REPO, prelude)


def finish(proc: forked.Run, expect: int = 0) -> str:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == expect, output[-4000:]
    return output


def losses(out: Path) -> list[tuple]:
    return [(line["step"], line["loss"], line["grad_norm"]) for line in read_jsonl(out / "metrics.jsonl") if "loss" in line]


def weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "model.safetensors")


def assert_same_run(resumed: Path, baseline: Path) -> None:
    assert losses(resumed) == losses(baseline)  # every step: loss and gradient norm, bit for bit
    a, b = weights(resumed), weights(baseline)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    evals = lambda out: [line for line in read_jsonl(out / "metrics.jsonl") if "eval_loss" in line]  # noqa: E731
    assert evals(resumed) == evals(baseline)


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    assert run_cli("preprocess", RUNS["pretrain"][0]).exit_code == 0  # the cache all runs share
    procs = {stage: llmkit(stage, root / stage) for stage in RUNS}
    for proc in procs.values():
        finish(proc)
    return root


def kill_after(proc: forked.Run, marker: Path, sig=signal.SIGKILL) -> None:
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, "the run ended before it could be interrupted:\n" + proc.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(sig)


@pytest.mark.parametrize("stage,checkpoint", [("pretrain", 22), ("pretrain", 44), ("finetune", 42), ("finetune", 63)],
                         ids=["pretrain-mid-epoch", "pretrain-epoch-boundary", "finetune-mid-epoch",
                              "finetune-epoch-boundary"])
def test_sigkill_then_resume_is_bitwise_the_uninterrupted_run(stage, checkpoint, baselines, tmp_path):
    out = tmp_path / "run"
    proc = llmkit(stage, out)
    kill_after(proc, out / f"checkpoint-{checkpoint}")
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "model.safetensors").exists()
    output = finish(llmkit(stage, out, "train.resume_from_checkpoint=latest"))
    assert f"from {out / f'checkpoint-{checkpoint}'} at step {checkpoint}" in output  # the banner's resumed line
    assert_same_run(out, baselines / stage)


def test_a_crash_while_saving_leaves_the_previous_checkpoint_usable(baselines, tmp_path):
    out = tmp_path / "run"
    dies_in_save = ("import os, torch\n_save = torch.save\n"
                    "def save(obj, f, *a, **k):\n"
                    "    if 'checkpoint-44' in str(f): os._exit(137)\n"
                    "    return _save(obj, f, *a, **k)\n"
                    "torch.save = save")
    finish(llmkit("pretrain", out, prelude=dies_in_save), expect=137)
    assert (out / ".tmp-checkpoint-44").is_dir() and not (out / "checkpoint-44").exists()
    assert (out / "checkpoint-22" / "trainer_state.json").exists()
    output = finish(llmkit("pretrain", out, "train.resume_from_checkpoint=latest"))
    assert "at step 22" in output
    assert not (out / ".tmp-checkpoint-44").exists()
    assert_same_run(out, baselines / "pretrain")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_exits_130(sig, baselines, tmp_path):
    out = tmp_path / "run"
    proc = llmkit("pretrain", out)
    kill_after(proc, out / "checkpoint-22", sig)
    output = finish(proc, expect=130)
    assert "train.resume_from_checkpoint=latest" in output and "Traceback" not in output
    stopped = json.loads(max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
                         .joinpath("trainer_state.json").read_text())["global_step"]
    assert 22 < stopped < 60 and not (out / "model.safetensors").exists()
    assert f"| steps | {stopped} of 60 |" in (out / "report.md").read_text()  # the report, up to the checkpoint
    finish(llmkit("pretrain", out, "train.resume_from_checkpoint=latest"))
    assert_same_run(out, baselines / "pretrain")


def test_resuming_a_finished_run_leaves_it_as_it_is(baselines):
    out = baselines / "pretrain"
    before = (out / "model.safetensors").read_bytes()
    result = run_cli("pretrain", RUNS["pretrain"][0], f"output_dir={out}", "train.resume_from_checkpoint=latest")
    assert result.exit_code == 0 and "already finished (step 60)" in result.output
    assert (out / "model.safetensors").read_bytes() == before


def test_a_new_run_refuses_an_output_dir_with_checkpoints(tmp_path):
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text("{}")
    result = run_cli("pretrain", RUNS["pretrain"][0], f"output_dir={tmp_path}")
    assert result.exit_code == 2 and "already holds 1 checkpoint(s)" in result.output
    assert "train.resume_from_checkpoint=latest" in result.output
    assert (tmp_path / "checkpoint-5" / "trainer_state.json").read_text() == "{}"


def test_resume_latest_without_checkpoints_starts_from_scratch(tmp_path):
    result = run_cli("pretrain", RUNS["pretrain"][0], f"output_dir={tmp_path}", "train.max_steps=3",
                     "train.resume_from_checkpoint=latest")
    assert result.exit_code == 0 and "starting from scratch" in result.output
    assert (tmp_path / "model.safetensors").exists()


def test_resume_from_a_path_that_is_not_a_checkpoint(tmp_path):
    result = run_cli("pretrain", RUNS["pretrain"][0], f"output_dir={tmp_path}",
                     f"train.resume_from_checkpoint={tmp_path / 'nope'}")
    assert result.exit_code == 2 and "is not a complete checkpoint" in result.output


def test_save_total_limit_never_removes_the_best_checkpoint(tmp_path):
    # With "greater loss is better" the best checkpoint is the first one, which the limit would delete.
    result = run_cli("pretrain", RUNS["pretrain"][0], f"output_dir={tmp_path}", "train.max_steps=40",
                     "train.save_steps=10", "train.eval_steps=10", "train.save_total_limit=1",
                     "train.metric_for_best_model=eval_loss", "train.greater_is_better=true")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-30"]


def _nan_at_step_3(monkeypatch):
    from llmkit.objectives import MaskedLM

    calls = {"n": 0}
    real = MaskedLM.loss

    def loss(self, model, batch):
        calls["n"] += 1
        loss_sum, count = real(self, model, batch)
        return (loss_sum * float("nan") if calls["n"] == 3 else loss_sum), count

    monkeypatch.setattr(MaskedLM, "loss", loss)


def test_a_nan_loss_stops_the_run_naming_the_step(monkeypatch, tmp_path):
    _nan_at_step_3(monkeypatch)
    result = run_cli("pretrain", RUNS["pretrain"][0], f"output_dir={tmp_path}", "train.max_steps=5",
                     "train.save_steps=2", "train.eval_strategy=no")
    assert result.exit_code == 3 and "step 3: the loss is nan" in result.output
    assert not (tmp_path / "model.safetensors").exists() and (tmp_path / "checkpoint-2").is_dir()


def test_a_nan_loss_can_skip_the_step_instead(monkeypatch, tmp_path):
    _nan_at_step_3(monkeypatch)
    result = run_cli("pretrain", RUNS["pretrain"][0], f"output_dir={tmp_path}", "train.max_steps=5",
                     "train.logging_steps=1", "train.eval_strategy=no", "train.on_nonfinite_loss=skip")
    assert result.exit_code == 0, result.output
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert {"step": 3, "skipped": "non-finite loss or gradient"} in lines
    import torch

    assert all(torch.isfinite(w).all() for w in weights(tmp_path).values())


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    out = tmp_path / "run"
    proc = llmkit("pretrain", out, "train.per_device_train_batch_size=256")  # ~1 s steps: room for two signals
    kill_after(proc, out / "metrics.jsonl", signal.SIGINT)
    for line in proc.stdout:  # the second signal only after the first was handled (the kernel merges pending ones)
        if "finishing this step" in line:
            break
    proc.send_signal(signal.SIGINT)
    output = finish(proc, expect=130)
    assert "interrupted" in output and "Resume with" not in output and "Traceback" not in output
    assert not list(out.glob("checkpoint-*"))
