"""What `llmkit rehearse` measures with, and how it turns the measurements into an ETA for the configured run.

The ETA is a sum of parts, each measured by the rehearsal on the real launcher and devices:

    start-up       the process's age (or its launcher's: torchrun) when the rehearsal began: interpreter,
                   imports, config
    data, model    building the tokenizer and data, and the model, as the stages build them. Once cached the data
                   loads faster, so a run after its rehearsal takes less than this part says
    set-up         the loop's optimizer, learning-rate schedule, Accelerate's prepare and the step plan
    training       steps x the time of a step of the run's mean size (below); at most train.max_time
    evaluations    how many the run does (train.eval_strategy, and one after the last step) x one measured pass
    checkpoints    how many the run saves (train.save_strategy; none after the last step) x one measured save
    final save     the final model, its card and report, as the run writes them at its end

The step time: a step's time grows with the tokens it computes, padding included, and a fixed part (the
optimizer, the gradient all-reduce, Python) does not. So each timed step gives (padded tokens, seconds), the
line `seconds = a + b x padded tokens` is fitted through them by least squares, and it is read at the mean padded
tokens per step of the run's own step plan (its first steps, up to PLAN_SAMPLE_STEPS). The timed steps are the
longest batches (the worst case for memory: the most tokens) and the run's own first batches (a typical length,
with train.group_by_length's little padding), so the mean lies between them and the line is read inside the
range it was measured on. The first step is not timed: it pays one-off costs (allocations, lazy
initialisation) that the run pays once, not per step. Early stopping can only shorten the run. Not counted:
the process's exit (the libraries' teardown, about a second here).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmkit.console import format_duration
from llmkit.errors import EXIT_BAD_INPUT, LlmkitError

PLAN_SAMPLE_STEPS = 2_000  # steps of the run's plan whose padded tokens give the mean step size
HARD_STOP_GRACE_S = 30.0  # how long a timed-out phase has to unwind before the process is stopped


class PhaseTimeout(LlmkitError):
    """A phase of the rehearsal ran past --phase-timeout."""


@contextlib.contextmanager
def time_limit(phase: str, seconds: float, cleanup=lambda: None):
    """Fail `phase` once it runs `seconds`: PhaseTimeout is raised in the main thread (SIGALRM). Code that waits
    where Python cannot raise (a collective waiting for a rank that never comes) is stopped by a watchdog thread
    HARD_STOP_GRACE_S later: `cleanup()`, the same one error line, and exit 2."""
    message = f"rehearse: the {phase} phase did not finish within {format_duration(seconds)} (--phase-timeout)"

    def raise_timeout(signum, frame):
        raise PhaseTimeout(message)

    def hard_stop():
        cleanup()
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(EXIT_BAD_INPUT)

    watchdog = threading.Timer(seconds + HARD_STOP_GRACE_S, hard_stop)
    watchdog.daemon = True
    # Signal handlers can only be set from the main thread; elsewhere the watchdog alone keeps the limit.
    alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    previous = signal.signal(signal.SIGALRM, raise_timeout) if alarm else None
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def peak_memory(device) -> dict[str, int]:
    """This process's peak memory in bytes: its resident set's high-water mark since it started and, on a GPU,
    the most memory torch allocated there."""
    import resource

    import torch

    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, kilobytes on Linux
    peaks = {"RSS": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit}
    if device.type == "cuda":
        peaks["GPU allocated"] = torch.cuda.max_memory_allocated(device)
    return peaks


def process_age() -> float:
    """Seconds since this process started, or the launcher that started it (torchrun, accelerate launch: the
    parent, which elastic marks with TORCHELASTIC_RUN_ID). Linux: the start time in /proc against the uptime;
    0 where unknown."""
    process = os.getppid() if os.environ.get("TORCHELASTIC_RUN_ID") else "self"
    try:
        start_ticks = int(Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()[19])  # starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def synchronize(device) -> None:
    """Wait for the device's queued work, so that the clock measures it (a CPU runs it synchronously)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class TimedStep:
    batches: str  # "longest" or "typical"
    padded: int  # this process's tokens, padding included
    tokens: int  # ... without padding
    seconds: float
    all_tokens: int  # every process's tokens without padding (what tokens/s counts)


def step_seconds(timed: list[TimedStep], mean_padded: float) -> float:
    """The time of a step of `mean_padded` tokens, from the line through the timed steps (see the module
    docstring), kept within the times measured."""
    padded = np.array([s.padded for s in timed], dtype=float)
    seconds = np.array([s.seconds for s in timed])
    if padded.max() > 1.05 * padded.min():  # sizes far enough apart to fit a slope
        slope, intercept = np.polyfit(padded, seconds, 1)
        estimate = intercept + slope * mean_padded
    else:
        estimate = seconds.mean()
    return float(np.clip(estimate, seconds.min(), seconds.max()))


@dataclass
class Estimate:
    """The ETA's parts in seconds, in the order they happen."""

    total_steps: int
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())

    def line(self) -> str:
        parts = ", ".join(f"{name} {format_duration(s)}" for name, s in self.parts.items())
        return f"ETA {format_duration(self.seconds)} for the configured run of {self.total_steps:,} steps ({parts})"
