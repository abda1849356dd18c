"""What a run writes about itself: run_info.json, metrics.jsonl, the start banner. Main process only."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from llmkit.console import say


class RunLog:
    """metrics.jsonl, and the trackers' copy of each record (`also`)."""

    def __init__(self, output_dir: Path, is_main: bool, also=None):
        self.output_dir, self.is_main, self.also = Path(output_dir), is_main, also
        self.path = self.output_dir / "metrics.jsonl"

    def print(self, text: str) -> None:
        say(text)

    def metrics(self, record: dict) -> None:
        """One JSON line per logging or evaluation event (only scalar values)."""
        if not self.is_main:
            return
        flat = {k: v for k, v in record.items() if isinstance(v, (int, float, str)) or v is None}
        with self.path.open("a") as f:
            f.write(json.dumps(flat) + "\n")
        if self.also is not None:
            self.also(flat)


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl (none when there is no file)."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def read_json(path: Path) -> dict:
    """A JSON file of the run folder (run_info.json, eval_results.json, ...); {} when there is none."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def write_run_info(output_dir: Path, stage: str, config_path: str, accelerator, **extra) -> None:
    if not accelerator.is_main_process:
        return
    info = {
        "stage": stage,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "config": str(config_path),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "host": platform.node(),
        "python": platform.python_version(),
        "versions": package_versions(),
        "git_commit": _git_commit(Path(config_path).resolve().parent),
        **extra,
    }
    (Path(output_dir) / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")


def mark_run(output_dir: Path, status: str, **extra) -> None:
    """run_info.json says how the run ended: `finished`, `interrupted` or `failed` (with the error)."""
    path = Path(output_dir) / "run_info.json"
    if path.exists():
        info = json.loads(path.read_text())
        info.update(status=status, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra)
        path.write_text(json.dumps(info, indent=2) + "\n")


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("llmkit", "torch", "transformers", "accelerate", "datasets", "tokenizers", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _git_commit(folder: Path) -> str | None:
    """The commit of the repository holding the config (experiments are kept in git), if any."""
    try:
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def banner(log: RunLog, rows: dict) -> None:
    width = max(map(len, rows))
    log.print("\n".join(f"  {k:<{width}}  {v}" for k, v in rows.items()))
