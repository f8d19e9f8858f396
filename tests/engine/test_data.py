"""Data loading, cleaning and sampling: exact counts, stratified, seeded."""
import collections
import json

import pytest

from llmhub.config import RunConfig, apply_overrides
from llmhub.data import load_split, load_task, read_records, sample_count
from llmhub.errors import HubError
from conftest import SHARED_DATA

needs_shared = pytest.mark.skipif(not (SHARED_DATA / "newsgroups").is_dir(),
                                  reason=f"full offline data not found at {SHARED_DATA}")


def cfg_for(**over):
    return apply_overrides(RunConfig(), over).data


@pytest.mark.parametrize("fraction,n", [(0.025, 266), (0.05, 533), (0.1, 1066), (0.25, 2666),
                                        (0.5, 5332), (1.0, 10664)])
def test_seed_fractions_of_the_seeds_train_set_are_exact(fraction, n):
    assert sample_count(10664, fraction) == n


@pytest.mark.parametrize("bad", [0, -0.5, 1.01])
def test_fraction_outside_range(bad):
    with pytest.raises(HubError, match="train_sample_fraction"):
        sample_count(100, bad)


@needs_shared
@pytest.mark.parametrize("n", [266, 533, 1066])
def test_newsgroups_sample_is_exact_stratified_and_seeded(n):
    data = cfg_for(task="classification", clean="strip", data_dir=str(SHARED_DATA), train_samples=n)
    a = load_task(data, seed=42, splits=("train",))["train"]
    b = load_task(data, seed=42, splits=("train",))["train"]
    c = load_task(data, seed=7, splits=("train",))["train"]
    assert len(a) == n
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["id"] for r in a] != [r["id"] for r in c]
    full = collections.Counter(r["target"] for r in load_split(data, "train"))
    got = collections.Counter(r["target"] for r in a)
    assert len(got) == 20
    total = sum(full.values())
    for label, count in full.items():  # stratified: each class within one example of its share
        assert abs(got[label] - n * count / total) <= 1.0


@needs_shared
def test_newsgroups_clean_strip_removes_headers():
    raw = load_split(cfg_for(task="classification", data_dir=str(SHARED_DATA)), "test")
    strip = load_split(cfg_for(task="classification", clean="strip", data_dir=str(SHARED_DATA)), "test")
    assert len(raw) == 7532 and raw[0]["input"].startswith("From:")
    # a few bodies quote a forwarded header of their own; the post headers themselves are gone
    assert sum(r["input"].startswith("From:") for r in strip) < 0.01 * len(strip)
    assert len(strip) == len(raw)  # the test split is evaluated whole, empty posts included
    train = load_split(cfg_for(task="classification", clean="strip", data_dir=str(SHARED_DATA)), "train")
    assert len(train) == 11014 and all(r["input"] for r in train)  # 300 header/quote-only posts dropped


@needs_shared
def test_samsum_fraction_floor():
    data = cfg_for(task="summarization", data_dir=str(SHARED_DATA), train_sample_fraction=0.05)
    assert len(load_task(data, 42, ("train",))["train"]) == 14732 * 5 // 100


def test_dialogsum_groups_three_references(data_dir):
    rows = load_split(cfg_for(task="dialogsum", data_dir=str(data_dir)), "test")
    assert [r["id"] for r in rows] == ["test_0", "test_1", "test_2"]
    assert all(len(r["references"]) == 3 for r in rows)


def test_custom_jsonl_and_csv(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"q": "hi", "a": "yes"}\n{"q": "bye", "a": "no"}\n')
    (tmp_path / "test.csv").write_text("q,a\nhello,yes\n")
    data = cfg_for(task="custom", train_file=str(tmp_path / "train.jsonl"), test_file=str(tmp_path / "test.csv"),
                   input_column="q", target_column="a", kind="classification")
    rows = load_task(data, 1)
    assert len(rows["train"]) == 2 and rows["test"] == [{"id": "0", "input": "hello", "target": "yes"}]


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"a": 1}) + "\n{not json\n")
    with pytest.raises(HubError, match=r"bad.jsonl:2: malformed JSON"):
        read_records(p)


def test_missing_column(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "x"}\n')
    data = cfg_for(task="custom", train_file=str(tmp_path / "t.jsonl"), test_file=str(tmp_path / "t.jsonl"),
                   input_column="text", target_column="label")
    with pytest.raises(HubError, match="no column 'label'"):
        load_task(data, 1)


@needs_shared
def test_classification_test_subset_is_stratified_and_fixed():
    data = cfg_for(task="classification", clean="strip", data_dir=str(SHARED_DATA), test_samples=200)
    a = load_task(data, seed=1, splits=("test",))["test"]
    b = load_task(data, seed=2, splits=("test",))["test"]
    assert len(a) == 200 and len({r["target"] for r in a}) == 20
    assert [r["id"] for r in a] == [r["id"] for r in b]  # the training seed does not move the test subset
