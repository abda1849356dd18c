"""Experiment trackers (train.report_to) through Accelerate's own tracking, offline unless told otherwise:

    tensorboard  event files under output_dir/runs/<run name>/
    mlflow       sqlite:///<output_dir>/mlflow.db (MLFLOW_TRACKING_URI wins), artifacts in output_dir/mlflow-artifacts
    wandb        offline (WANDB_MODE=offline) unless the user has logged in

Each gets the resolved config as hyperparameters (flattened to `section.key`), and every metrics.jsonl record
with the same names and steps. A resumed run continues the same tracker run without logging a step twice:
TensorBoard purges the events after the checkpoint's step; the MLflow run id is kept in output_dir/trackers.json,
and steps it already holds (the resumed steps are bitwise the same) are not logged again.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

INSTALLS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # tracker: the module it needs
RUNS_FILE = "trackers.json"
# The user's own MLflow server, if any, read once: mlflow.set_tracking_uri writes the variable back itself.
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def missing_trackers(names: list[str]) -> list[str]:
    return [name for name in names if importlib.util.find_spec(INSTALLS[name]) is None]


def project_configuration(out: Path):
    from accelerate.utils import ProjectConfiguration

    return ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "runs"))


class Trackers:
    """The run's trackers, started on the main process (the Accelerator was made with log_with=report_to)."""

    def __init__(self, accelerator, names: list[str], out: Path, config: dict, resumed_step: int | None):
        self.accelerator, self.names, self.skip = accelerator, names, {}
        if not names or not accelerator.is_main_process:
            return
        runs = json.loads((out / RUNS_FILE).read_text()) if resumed_step is not None and (out / RUNS_FILE).exists() \
            else {}
        init = {"tensorboard": {"purge_step": resumed_step + 1} if resumed_step is not None else {},
                "mlflow": {"logging_dir": str(out / "mlflow-artifacts"), "run_id": runs.get("mlflow")},
                "wandb": {"dir": str(out), **({"id": runs["wandb"], "resume": "allow"} if "wandb" in runs else {})}}
        if "mlflow" in names:
            import mlflow

            mlflow.set_tracking_uri(USER_TRACKING_URI or f"sqlite:///{out.resolve()}/mlflow.db")
        if "wandb" in names and not os.environ.get("WANDB_API_KEY"):
            os.environ.setdefault("WANDB_MODE", "offline")
        accelerator.init_trackers(out.resolve().name, init_kwargs={name: init[name] for name in names})
        params = _hyperparameters(config)
        for tracker in accelerator.trackers:
            if tracker.name == "mlflow" and runs.get("mlflow"):
                self.skip["mlflow"] = _last_mlflow_step(runs["mlflow"])  # its params are there already
            else:
                tracker.store_init_configuration(params)
        (out / RUNS_FILE).write_text(json.dumps(_run_ids(accelerator.trackers), indent=2) + "\n")

    def log(self, record: dict) -> None:
        """One metrics.jsonl record, under the same names, at its step."""
        values = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        for tracker in self.accelerator.trackers if self.accelerator.is_main_process else []:
            if record["step"] > self.skip.get(tracker.name, 0):
                tracker.log(values, step=record["step"])

    def finish(self) -> None:
        """End the tracker runs (the main process's); the process group is the caller's."""
        for tracker in self.accelerator.trackers if self.accelerator.is_main_process else []:
            tracker.finish()
        self.accelerator.trackers = []
        if "mlflow" in self.names:
            _restore_tracking_uri()


def _restore_tracking_uri() -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: put back what the process had, so that a next run
    in it (or a child process) does not write into this run's database."""
    if USER_TRACKING_URI is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = USER_TRACKING_URI


def _hyperparameters(config: dict) -> dict:
    """{"section.key": scalar}: TensorBoard's hparams take no lists, dicts or None."""
    from llmkit.config import flatten

    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flatten(config).items()}


def _run_ids(trackers) -> dict:
    ids = {}
    for tracker in trackers:
        if tracker.name == "mlflow":
            ids["mlflow"] = tracker.tracker.info.run_id
        elif tracker.name == "wandb":
            ids["wandb"] = tracker.tracker.id
    return ids


def _last_mlflow_step(run_id: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    keys = client.get_run(run_id).data.metrics
    return max((m.step for key in keys for m in client.get_metric_history(run_id, key)), default=0)
