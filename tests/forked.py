"""`llmkit` runs in processes of their own that start in a fraction of a second: multiprocessing's forkserver
imports torch, transformers and the other libraries once, and forks each run from there instead of importing
them anew (~6 s a process, most of a kill-and-resume test). Each run is still a separate process: its own pid,
signals, exit code, Accelerate state, seed and thread count, with stdout and stderr on one pipe, as
subprocess.Popen gives."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading

# Libraries only: llmkit is imported in each run, after its prelude, so a prelude's patch of an llmkit function
# reaches the modules that import it by name.
PRELOAD = ["torch", "transformers", "datasets", "accelerate", "transformers.models.bert.modeling_bert",
           "matplotlib.pyplot"]
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


class Run:
    """The Popen methods the tests use, on a forked llmkit run."""

    def __init__(self, process, output):
        self.process, self.stdout = process, output
        self.pid, self.args = process.pid, process.name

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        """All of the run's output (the run's end closes the pipe); a run still going after `timeout` seconds
        is killed, which ends the pipe, and TimeoutExpired raised."""
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self.kill()

        watchdog = threading.Timer(timeout, expire) if timeout is not None else None
        if watchdog is not None:
            watchdog.start()
        try:
            output = self.stdout.read()
            self.wait()
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if expired.is_set():
            raise subprocess.TimeoutExpired(self.args, timeout, output)
        return output, None

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        if self.returncode is None:
            self.send_signal(signal.SIGKILL)


def start(argv: list[str], env: dict, cwd, prelude: str = "") -> Run:
    """`llmkit ARGV` with `env` as its whole environment, after some Python (`prelude`, e.g. a patch)."""
    reader, writer = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_run, args=(argv, env, str(cwd), prelude, writer), name=" ".join(argv))
    process.start()
    writer.close()  # the child holds the only write end: its exit is the pipe's end
    output = os.fdopen(os.dup(reader.fileno()), "r", encoding="utf-8", errors="replace")
    reader.close()
    return Run(process, output)


def _run(argv: list[str], env: dict, cwd: str, prelude: str, writer) -> None:
    import torch

    os.dup2(writer.fileno(), 1)
    os.dup2(writer.fileno(), 2)
    writer.close()
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # line-buffered, as PYTHONUNBUFFERED runs print
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:  # read by OpenMP when the server loaded it; the thread count is set here
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    sys.argv = ["llmkit", *argv]
    exec(compile(f"{prelude}\nfrom llmkit.cli import main\nmain()", "<llmkit run>", "exec"), {"__name__": "__main__"})
