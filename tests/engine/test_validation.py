"""Validation splits and selection by them: disjoint from train and test, the same for every run,
evaluated during training, and the best checkpoint by validation loss is the one saved and tested."""
from __future__ import annotations

import collections
import json

import pytest

from llmhub.config import RunConfig, apply_overrides
from llmhub.data import load_split, load_task
from llmhub.errors import HubError
from llmhub.experiment import load_trained, prepare, train_experiment
from conftest import SHARED_DATA
from test_experiments import tiny_config

needs_shared = pytest.mark.skipif(not (SHARED_DATA / "newsgroups").is_dir(),
                                  reason=f"full offline data not found at {SHARED_DATA}")
SPLITS = ("train", "validation", "test")


def data_cfg(**over):
    return apply_overrides(RunConfig(), over).data


def ids(rows) -> set:
    return {r["id"] for r in rows}


@needs_shared
def test_samsum_uses_its_own_validation_split():
    rows = load_task(data_cfg(task="summarization", data_dir=str(SHARED_DATA), train_samples=1000), 42, SPLITS)
    assert len(rows["train"]) == 1000 and len(rows["validation"]) == 818 and len(rows["test"]) == 819
    assert not ids(rows["validation"]) & ids(rows["train"])
    assert not ids(rows["validation"]) & ids(rows["test"])
    assert not ids(rows["train"]) & ids(rows["test"])


@needs_shared
@pytest.mark.parametrize("n,seed", [(266, 42), (1066, 7), (None, 42)])
def test_newsgroups_validation_is_a_fixed_stratified_slice_held_out_of_train(n, seed):
    cfg = data_cfg(task="classification", clean="strip", data_dir=str(SHARED_DATA), train_samples=n)
    rows = load_task(cfg, seed, SPLITS)
    everything = load_split(cfg, "train")
    val, total = rows["validation"], len(everything)
    assert len(val) == total // 10  # 10 % of the cleaned train posts, whatever the run samples for training
    assert not ids(val) & ids(rows["train"])
    assert len(rows["train"]) == (n or total - total // 10)
    counts, sizes = (collections.Counter(r["target"] for r in rs) for rs in (val, everything))
    assert all(abs(counts[label] - sizes[label] / 10) <= 1 for label in sizes)  # stratified: 10 % per class
    # the same rows for every run: the slice's seed is fixed, not the run's
    other = load_task(data_cfg(task="classification", clean="strip", data_dir=str(SHARED_DATA), train_samples=533),
                      3, ("validation",))["validation"]
    assert [r["id"] for r in other] == [r["id"] for r in val]
    # rows of the train file (ids are its line numbers); test rows come from the test file. (Texts
    # are not compared: 20 Newsgroups itself has posts that appear in both of its files.)
    assert ids(val) <= ids(everything)


def test_custom_validation_file_or_fraction(tmp_path):
    rows = [{"id": f"r{i}", "input": f"text {i}", "target": f"t{i}"} for i in range(30)]
    for name, part in (("train", rows[:20]), ("val", rows[20:25]), ("test", rows[25:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    base = dict(task="custom", train_file=str(tmp_path / "train.jsonl"), test_file=str(tmp_path / "test.jsonl"))
    own = load_task(data_cfg(**base, validation_file=str(tmp_path / "val.jsonl")), 1, SPLITS)
    assert ids(own["validation"]) == {f"r{i}" for i in range(20, 25)} and len(own["train"]) == 20
    held = load_task(data_cfg(**base, validation_fraction=0.25), 1, SPLITS)
    assert len(held["validation"]) == 5 and len(held["train"]) == 15
    assert not ids(held["validation"]) & ids(held["train"])
    none = load_task(data_cfg(**base, validation_fraction=0), 1, SPLITS)
    assert "validation" not in none and len(none["train"]) == 20
    with pytest.raises(HubError, match="validation_samples 20 leaves no training rows"):
        load_task(data_cfg(**base, validation_samples=20), 1, SPLITS)


def test_early_stopping_needs_eval_steps_and_a_validation_split(tiny_models, data_dir, tmp_path):
    cfg = tiny_config(tiny_models["llama"], data_dir, tmp_path / "a", "summarization", "lora",
                      early_stopping_patience=2)
    with pytest.raises(HubError, match="early_stopping_patience needs --eval_steps"):
        prepare(cfg, SPLITS)
    cfg = tiny_config(tiny_models["llama"], data_dir, tmp_path / "a", "classification", "lora",
                      eval_steps=2, validation_fraction=0)
    with pytest.raises(HubError, match="eval_steps needs a validation split"):
        prepare(cfg, SPLITS)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_early_stopping_saves_and_tests_the_best_checkpoint(tiny_models, data_dir, tmp_path, method):
    """A learning rate far too high makes the validation loss rise after its first evaluations:
    training stops `patience` evaluations after the best one, and the saved model is the best one."""
    from llmhub import train as train_mod

    out = tmp_path / "run"
    cfg = tiny_config(tiny_models["llama"], data_dir, out, "summarization", method, max_steps=40,
                      eval_steps=2, early_stopping_patience=2, learning_rate=LR[method], train_samples=24,
                      torch_dtype="float32")  # reloaded weights as trained, so losses compare exactly
    record = train_experiment(cfg)
    val = record["validation"]
    losses = {e["step"]: e["eval_loss"] for e in val["history"]}
    best = min(losses, key=losses.get)
    assert val["best_step"] == best and val["selected_by"] == "eval_loss"
    assert record["train"]["steps"] == max(losses) == best + 2 * 2 < 40  # stopped early
    assert val["loss"] == pytest.approx(losses[best], rel=1e-5)
    assert val["examples"] == 4
    # the model saved in model/ is the best checkpoint: reloaded, its validation loss is the best one
    s = prepare(cfg, SPLITS)
    tok, model = load_trained(out, cfg, s.family)
    feats = [train_mod.tokenize_rows(s.splits[k], tok, s.family, s.style, s.kind, cfg.data) for k in ("train", "validation")]
    again = train_mod.make_trainer(model, tok, feats[0], s.family, cfg, tmp_path / "ck", feats[1]).evaluate()
    assert again["eval_loss"] == pytest.approx(losses[best], rel=1e-4)
    saved = json.loads((out / "results.json").read_text())
    assert saved["validation"]["history"] == val["history"] and "validation" not in saved["train"]


LR = {"lora": 0.3, "full": 0.05}
