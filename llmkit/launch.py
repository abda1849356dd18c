"""Several runs one after another in one launch (one process, or each process of a torchrun / accelerate job):
the seeds of `--seeds`, the trials of `llmkit sweep`.

    with several_runs():
        for cfg in configs:
            stage.run(cfg, config_path)

The runs share the launch's process group, which goes down once, after the last. torch cannot bring one back
reliably after it was destroyed: under torchrun a new group finds the old one's peer addresses in the launcher's
store and fails to connect to them (`Gloo connectFullMesh failed ... Connection refused`, about one time in two).
Each run still builds its own Accelerator: the per-run part of Accelerate's singletons (mixed precision, plugins,
gradient state) is reset when a run ends, the process part (devices, process group) kept.
"""

from __future__ import annotations

import contextlib

_depth = 0  # how many several_runs() blocks are open (a sweep's trial runs its seeds in one of its own)


@contextlib.contextmanager
def several_runs():
    """Runs inside share one process group. It ends when the outermost block ends without an error, on every
    process together (after an error the other processes may be gone: no collective then)."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    import torch.distributed

    if _depth == 0 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # the main process may still be writing what the runs add up to
        torch.distributed.destroy_process_group()


def end_run(accelerator) -> None:
    """A run's training is over, on every process at once: alone in its launch, it takes the process group down
    with it; inside several_runs(), only its Accelerator state goes, for the next run to build its own."""
    if _depth == 0:
        accelerator.end_training()
    else:
        forget_run()


def forget_run() -> None:
    """Drop the per-run part of Accelerate's singletons (also after a run that failed, when more follow)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
