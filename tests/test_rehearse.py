"""`llmkit rehearse`: a dry run that reports memory, throughput, padding and an ETA, round-trips a checkpoint,
fails a hung phase by name, and never touches output_dir."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from conftest import CONFIGS, REPO, run_cli

REPORT_ROWS = ("peak memory", "tokens/s", "padding", "evaluation", "checkpoint", "barrier", "step time")


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def earlier_run(tmp_path):
    """An output_dir holding a run, to be left byte for byte as it is."""
    out = tmp_path / "run"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3}')
    (out / "model.safetensors").write_bytes(b"weights")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n')
    return out


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """tempfile's folder for this test, to see that the rehearsal removes its own."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize("config", ["finetune", "pretrain"])
def test_rehearse_reports_and_leaves_output_dir_alone(config, earlier_run, private_tmp, monkeypatch):
    from llmkit.stages import rehearse

    picked, longest_steps = [], rehearse.longest_steps

    def spy(lengths, *args):  # what the rehearsal trained on: (each example's tokens, the steps' example ids)
        steps = longest_steps(lengths, *args)
        picked.append((lengths, steps))
        return steps

    monkeypatch.setattr(rehearse, "longest_steps", spy)
    before = _snapshot(earlier_run)
    result = run_cli("rehearse", CONFIGS / "tiny" / f"{config}.yaml", f"output_dir={earlier_run}", "--steps", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(any(line.strip().startswith(row) for line in lines) for row in REPORT_ROWS), result.output
    assert "tensors bitwise equal" in result.output
    eta = [line for line in lines if line.startswith("ETA ")]
    assert len(eta) == 1 and "steps (start-up" in eta[0], result.output
    assert _snapshot(earlier_run) == before
    assert list(private_tmp.glob("llmkit-rehearse-*")) == []  # the rehearsal's folder is gone

    # The steps took the longest examples of all: as many as 2 steps of one global batch (32) hold.
    [(lengths, steps)] = picked
    taken = [i for step in steps for micro in step for i in micro]
    assert len(taken) == 64 and len(set(taken)) == 64
    assert lengths[taken].min() >= np.sort(lengths)[-64]


def test_a_hung_phase_fails_with_its_name(private_tmp, monkeypatch):
    from llmkit.stages import finetune

    monkeypatch.setattr(finetune, "build_tasks", lambda *args: time.sleep(60))
    started = time.perf_counter()
    result = run_cli("rehearse", CONFIGS / "tiny" / "finetune.yaml", "--phase-timeout", "0.5")
    assert result.exit_code == 2, result.output
    assert result.output == "error: rehearse: the data phase did not finish within 0.5s (--phase-timeout)\n"
    assert time.perf_counter() - started < 30
    assert list(private_tmp.glob("llmkit-rehearse-*")) == []


def test_a_phase_stuck_where_python_cannot_raise_is_stopped_by_the_watchdog(tmp_path):
    """As a collective waiting for a missing rank: here the phase blocks the alarm signal, then sleeps."""
    prelude = ("import signal, time\nimport llmkit.rehearsal, llmkit.stages.finetune as finetune\n"
               "llmkit.rehearsal.HARD_STOP_GRACE_S = 0.5\n"
               "finetune.build_tasks = lambda *args: (signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM}), "
               "time.sleep(60))\n")
    args = ["rehearse", str(CONFIGS / "tiny" / "finetune.yaml"), "--phase-timeout", "0.5"]
    code = f"{prelude}import sys\nfrom llmkit.cli import main\nsys.argv = ['llmkit', *{args!r}]\nmain()"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: rehearse: the data phase did not finish within 0.5s (--phase-timeout)" in proc.stderr
    assert time.perf_counter() - started < 60
    assert list(tmp_path.glob("llmkit-rehearse-*")) == []


def test_longest_steps_cut_the_longest_examples_as_the_loop_cuts_a_batch():
    from llmkit.config import TrainSection
    from llmkit.stages.rehearse import longest_steps

    lengths = np.random.default_rng(0).integers(1, 500, size=100)
    t = TrainSection(per_device_train_batch_size=3, gradient_accumulation_steps=2)
    ranks = [longest_steps(lengths, 2, t, 2, rank) for rank in range(2)]
    assert all(len(steps) == 2 and all(len(micro) == 3 for step in steps for micro in step) for steps in ranks)
    first, second = ([i for steps in ranks for micro in steps[step] for i in micro] for step in range(2))
    longest = np.argsort(-lengths, kind="stable")
    assert sorted(first) == sorted(longest[:12]) and sorted(second) == sorted(longest[12:24])
    # Fewer examples than the steps need: the longest come round again.
    assert longest_steps(lengths[:5], 2, t, 1, 0)[1][0] == np.argsort(-lengths[:5], kind="stable")[[1, 2, 3]].tolist()
