"""scripts/gpu_check.sh on a machine without a GPU: the CPU fallback runs in seconds, exits 0 and writes the
JSON shape the GPU run writes, with `"gpu": false` and the GPU-only parts skipped with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import time

from conftest import REPO

PARTS = {"matmul_peak", "pretrain", "pretrain_peer", "fsdp2", "deepspeed_zero2", "finetune", "finetune_peer"}


def test_gpu_check_cpu_fallback(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the fallback, even on a machine with a GPU
    start = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert seconds < 60, f"the CPU fallback took {seconds:.0f} s"
    report = json.loads(out.read_text())
    assert report["gpu"] is False and report["gpu_name"] is None
    assert report["date"] and report["machine"]
    assert {"torch", "transformers", "accelerate"} <= report["versions"].keys()
    assert set(report["parts"]) == PARTS
    for name, part in report["parts"].items():
        assert part["status"] in {"ok", "skipped", "failed"}, name
        assert isinstance(part["seconds"], (int, float)), name
        if part["status"] == "skipped":
            assert part["reason"], name
    parts = report["parts"]
    for name in ("fsdp2", "deepspeed_zero2"):
        assert parts[name]["status"] == "skipped" and parts[name]["reason"] == "needs a GPU"
    for name in ("matmul_peak", "pretrain", "finetune"):  # the tiny CPU versions genuinely run
        assert parts[name]["status"] == "ok", parts[name]
    assert parts["pretrain"]["tokens_per_s"] > 0 and 0 < parts["pretrain"]["mfu"] < 1
    assert parts["matmul_peak"]["bf16_tflops"] > 0
