"""`--report_to`: hand the Trainer's logs to a tracker (TensorBoard, MLflow, Weights & Biases).

The tracker's package is checked when the run is validated, so a missing one is one error line
before anything is loaded or written, not an exception from inside the Trainer.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from .errors import HubError

TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # report_to -> package


def check_tracker(report_to: str) -> None:
    """A tracker needs its package; say so before anything runs, not from inside the Trainer."""
    import importlib.util

    package = TRACKERS.get(report_to)
    if package and importlib.util.find_spec(package) is None:
        raise HubError(f"report_to '{report_to}' needs the package {package} (pip install {package}); "
                       f"allowed without extra packages: none")


def tracking(report_to: str, exp_dir: Path) -> tuple[str, list]:
    """(Trainer report_to, callbacks): TensorBoard writes into EXP/logs/, which outlives checkpoints/."""
    if report_to != "tensorboard":
        return report_to, []
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(exp_dir / "logs")
    return "none", [callback]


@contextmanager
def tracker_run(report_to: str, exp_dir: Path, main_process: bool = True):
    """One MLflow run around training *and* the final validation: left to itself, transformers'
    MLflowCallback ends its run when training ends and the final `evaluate()` opens a second one."""
    if report_to != "mlflow" or not main_process:
        yield
        return
    import mlflow

    if mlflow.active_run() is not None:  # the caller's run (nested sweeps, notebooks): log into it
        yield
        return
    with mlflow.start_run(run_name=Path(exp_dir).name):
        yield
