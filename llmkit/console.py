"""What a run prints, printed once: every process of a torchrun / accelerate job runs the same code, and
only the main one (RANK 0, or no RANK at all) speaks. Data go to files (runlog); this is for people."""

from __future__ import annotations

import contextlib
import os
import sys


MIB = 1 << 20


def format_duration(seconds: float) -> str:
    """`9.1s`, `4m10s`, `2h05m`: what llmkit reads back as a duration (train.max_time)."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 9.95 else f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


_quiet = False


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def quiet():
    """No lines from `say` inside: `llmkit validate` reads the data as a run does, and reports what it found in
    its own words."""
    global _quiet
    before, _quiet = _quiet, True
    try:
        yield
    finally:
        _quiet = before


def say(text: str, err: bool = False) -> None:
    """A line for the person running the command: stdout, or stderr beside predictions written to stdout."""
    if is_main_process() and not _quiet:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


def warn(text: str) -> None:
    say(f"WARNING: {text}")
