"""--report_to tensorboard / mlflow run for real on a tiny model, and what the tracker wrote is read
back: the training loss of every step, equal to the loss log of the run's results.json."""
from __future__ import annotations

import json

import pytest

from llmhub.experiment import train_experiment
from test_experiments import tiny_config


def _losses(out) -> list[tuple[int, float]]:
    """(step, loss) of every logged training step, from results.json."""
    train = json.loads((out / "results.json").read_text())["train"]
    return [(e["step"], e["loss"]) for e in train["loss_log"]]


def test_tensorboard_event_file_holds_the_loss(tiny_models, data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "exp"
    train_experiment(tiny_config(tiny_models["llama"], data_dir, out, "summarization", "lora", report_to="tensorboard"))
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events, sorted(p.relative_to(out) for p in out.rglob("*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = [(s.step, s.value) for s in acc.Scalars("train/loss")]
    expected = _losses(out)
    assert [step for step, _ in logged] == [step for step, _ in expected] == [1, 2, 3]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)  # float32 in the event file


def test_mlflow_local_store_holds_the_loss(tiny_models, data_dir, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    # a local store, no server: SQLite, since MLflow 3 refuses its ./mlruns file store unless told
    # MLFLOW_ALLOW_FILE_STORE=true (maintenance mode)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "llmhub-test")
    out = tmp_path / "exp"
    train_experiment(tiny_config(tiny_models["llama"], data_dir, out, "summarization", "lora", report_to="mlflow"))
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("llmhub-test")
    runs = client.search_runs([experiment.experiment_id])
    # one run per experiment, named after it: training and the final validation together
    assert [(r.info.run_name, r.info.status) for r in runs] == [("exp", "FINISHED")]
    assert "eval_loss" in runs[0].data.metrics
    history = sorted((m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "loss"))
    expected = _losses(out)
    assert [step for step, _ in history] == [step for step, _ in expected] == [1, 2, 3]
    assert [v for _, v in history] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert runs[0].data.params["learning_rate"] == "0.001"  # the Trainer's arguments are logged too
