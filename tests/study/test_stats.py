"""Bootstrap intervals and paired tests over the committed SmolLM2 predictions (real files)."""
import json
from pathlib import Path

import numpy as np
import pytest

from llmhub import metrics
from llmhub.study import stats
from llmhub.errors import HubError

STUDY = Path(__file__).resolve().parents[2] / "results" / "llama2" / "smollm2_summarization"


@pytest.fixture(scope="module")
def runs():
    return {name: stats.read_predictions(STUDY / name / "predictions.jsonl") for name in ("zero-shot", "lora")}


def test_example_scores_average_to_the_reported_metrics(runs):
    """The means are the metrics the run's evaluation wrote to its results.json."""
    scores = stats.example_scores(runs["lora"], "generation")
    reported = json.loads((STUDY / "lora" / "results.json").read_text())["metrics"]
    for k in metrics.ROUGE_KEYS:
        assert scores[k].mean() == pytest.approx(reported[k], abs=1e-9)


def test_interval_is_seeded_and_contains_the_point_estimate(runs):
    r1 = stats.example_scores(runs["lora"], "generation")["rouge1"]
    low, high = stats.bootstrap_interval(r1, seed=0)
    assert (low, high) == stats.bootstrap_interval(r1, seed=0)
    assert (low, high) != stats.bootstrap_interval(r1, seed=1)
    assert low < r1.mean() < high
    assert high - low < 10  # 200 dialogues: a few ROUGE points wide, not the whole scale


def test_classification_scores_use_the_matched_label():
    rows = [{"id": "1", "reference": "a", "prediction": "it is a", "label": "a"},
            {"id": "2", "reference": "b", "prediction": "zzz", "label": None},
            {"id": "3", "reference": "a", "prediction": "a"}]
    assert list(stats.example_scores(rows, "classification")["accuracy"]) == [100.0, 0.0, 100.0]


def test_paired_test_separates_lora_from_zero_shot_but_not_a_run_from_itself(runs):
    a, b = stats.paired(runs["lora"], list(reversed(runs["zero-shot"])))  # joined by id, not order
    assert [r["id"] for r in a] == [r["id"] for r in b]
    sa = stats.example_scores(a, "generation")["rouge1"]
    sb = stats.example_scores(b, "generation")["rouge1"]
    assert stats.paired_bootstrap_p(sa, sb) < 0.01
    noise = sa + np.random.default_rng(0).normal(0, 0.01, len(sa))
    assert stats.paired_bootstrap_p(sa, noise) > 0.05
    with pytest.raises(HubError):
        stats.paired_bootstrap_p(sa, sb[:-1])


def test_a_bad_predictions_line_names_file_and_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "1", "prediction": "x", "reference": "x"}\n{oops\n')
    with pytest.raises(HubError, match=r"predictions.jsonl:2: malformed JSON"):
        stats.read_predictions(path)


def test_a_row_without_reference_names_file_line_and_field(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "1", "prediction": "x", "reference": "x"}\n{"id": "2", "prediction": "y"}\n')
    with pytest.raises(HubError, match=r"predictions.jsonl:2: .*missing reference$"):
        stats.read_predictions(path)
