"""Errors a user can act on, and the process exit codes the CLI maps them to.

Exit codes (documented in the README):
  0   the stage finished
  2   bad input: config, data file, model folder, output directory
  3   training stopped because the loss became NaN or infinite
  130 interrupted (Ctrl-C / SIGTERM): the current step finished and a checkpoint was saved;
      a second Ctrl-C stops at once
"""

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_NON_FINITE_LOSS = 3
EXIT_INTERRUPTED = 130


class LlmkitError(Exception):
    """A failure the user caused and can fix; printed as one line, no traceback."""

    exit_code = EXIT_BAD_INPUT


class NonFiniteLossError(LlmkitError):
    exit_code = EXIT_NON_FINITE_LOSS


class InterruptedRun(LlmkitError):
    """Stopped by SIGINT/SIGTERM after saving a checkpoint."""

    exit_code = EXIT_INTERRUPTED
