"""Two CPU processes under torchrun are real DDP (gloo): one run, one model, the 1-process losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import CONFIGS, REPO, read_jsonl, run_cli

PRETRAIN = CONFIGS / "tiny" / "pretrain.yaml"
COMMON = ["train.max_steps=6", "train.logging_steps=1", "train.eval_steps=3", "train.save_steps=3",
          "data.max_eval_samples=1",  # rank 1 gets no validation batch and must not hang
          "model.config.hidden_dropout_prob=0", "model.config.attention_probs_dropout_prob=0"]


def test_torchrun_two_processes_match_one_process(tmp_path):
    ok = run_cli("preprocess", PRETRAIN)  # both ranks then read the cache
    assert ok.exit_code == 0, ok.output
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "llmkit", "pretrain", str(PRETRAIN), f"output_dir={two}", "train.per_device_train_batch_size=16",
         *COMMON],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads((two / "run_info.json").read_text())
    assert info["num_processes"] == 2 and "MULTI_CPU" in info["distributed_type"]
    assert (two / "model.safetensors").exists() and (two / "checkpoint-3").is_dir()
    # Only rank 0 speaks: the banner, each log and eval line, and the closing line appear once.
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.stdout.count("pretrain done") == 1 and proc.stdout.count("parameters") == 1
    assert sorted(line for line in set(lines) if lines.count(line) > 1) == [], proc.stdout + proc.stderr
    two_lines = read_jsonl(two / "metrics.jsonl")
    assert [line["step"] for line in two_lines if "loss" in line] == [1, 2, 3, 4, 5, 6]  # written once, not per rank

    one = tmp_path / "one"
    result = run_cli("pretrain", PRETRAIN, f"output_dir={one}", "train.per_device_train_batch_size=32", *COMMON)
    assert result.exit_code == 0, result.output
    one_lines = read_jsonl(one / "metrics.jsonl")
    for a, b in zip((x for x in one_lines if "loss" in x), (x for x in two_lines if "loss" in x), strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-3 * a["loss"], (a, b)
    evals = [(x["eval_loss"], y["eval_loss"]) for x, y in zip(one_lines, two_lines, strict=True) if "eval_loss" in x]
    assert evals and all(abs(a - b) <= 1e-3 * a for a, b in evals)


def _torchrun(out, *extra, port: int):
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         "-m", "llmkit", "pretrain", str(PRETRAIN), f"output_dir={out}", "train.per_device_train_batch_size=16",
         "train.max_steps=14", "train.save_steps=5", "train.eval_steps=5", "train.logging_steps=1",
         "train.save_total_limit=null", *extra],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)  # its own process group, to kill every rank at once


def test_torchrun_resume_after_a_kill_is_exact(tmp_path):
    import signal
    import time

    from safetensors.torch import load_file

    assert run_cli("preprocess", PRETRAIN).exit_code == 0
    baseline = _torchrun(tmp_path / "baseline", port=29541)
    out, _ = baseline.communicate(timeout=600)
    assert baseline.returncode == 0, out[-3000:]

    run = tmp_path / "run"
    killed = _torchrun(run, port=29542)
    while not (run / "checkpoint-5").exists():
        assert killed.poll() is None, killed.stdout.read()[-3000:]
        time.sleep(0.005)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    assert {p.name for p in (run / "checkpoint-5").glob("rng_state_*.json")} == {"rng_state_0.json",
                                                                                  "rng_state_1.json"}
    resumed = _torchrun(run, "train.resume_from_checkpoint=latest", port=29543)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]

    steps = lambda d: [(x["step"], x["loss"]) for x in read_jsonl(d / "metrics.jsonl") if "loss" in x]  # noqa: E731
    assert steps(run) == steps(tmp_path / "baseline") and len(steps(run)) == 14
    a, b = load_file(run / "model.safetensors"), load_file(tmp_path / "baseline" / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
