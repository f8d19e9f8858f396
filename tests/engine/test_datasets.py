"""--dataset: a save_to_disk folder, a folder of data files and a single file, read through the
datasets library with a column map and split names; bad names are one error line."""
from __future__ import annotations

import json

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from llmhub.config import RunConfig, apply_overrides
from llmhub.data import load_task
from llmhub.errors import HubError
from llmhub.experiment import train_experiment
from conftest import LABELS, WORDS
from test_experiments import tiny_config

SPLITS = ("train", "validation", "test")


def posts(n: int, offset: int = 0) -> dict:
    texts, labels = [], []
    for i in range(n):
        label = i % len(LABELS)
        texts.append(f"{WORDS[LABELS[label]]} {offset + i}")
        labels.append(label)
    return {"body": texts, "topic": labels}


@pytest.fixture()
def saved(tmp_path):
    """A DatasetDict saved with save_to_disk: class-label targets, columns named its own way."""
    features = Features({"body": Value("string"), "topic": ClassLabel(names=LABELS)})
    dd = DatasetDict({"train": Dataset.from_dict(posts(24), features=features),
                      "dev": Dataset.from_dict(posts(8, 100), features=features),
                      "test": Dataset.from_dict(posts(8, 200), features=features)})
    dd.save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def cfg(**over):
    base = {"task": "custom", "kind": "classification", "input_column": "body", "target_column": "topic"}
    return apply_overrides(RunConfig(), {**base, **over})


def test_save_to_disk_folder_with_column_map_and_split_names(saved):
    rows = load_task(cfg(dataset=str(saved), validation_split="dev").data, 1, SPLITS)
    assert [len(rows[s]) for s in SPLITS] == [24, 8, 8]
    assert {r["target"] for r in rows["train"]} == set(LABELS)  # class ids become their names
    assert rows["test"][0]["input"].endswith(" 200")
    # no split named "validation": a slice of train is held out instead
    held = load_task(cfg(dataset=str(saved), validation_fraction=0.25).data, 1, SPLITS)
    assert len(held["validation"]) == 6 and len(held["train"]) == 18


def test_folder_of_data_files_trains_end_to_end(tiny_models, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    for split, n, offset in (("train", 20, 0), ("test", 4, 50)):
        p = posts(n, offset)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"body": b, "topic": LABELS[t]}) + "\n"
                                                       for b, t in zip(p["body"], p["topic"])))
    over = {"kind": "classification", "dataset": str(folder), "input_column": "body",
            "target_column": "topic", "train_samples": 12}
    record = train_experiment(tiny_config(tiny_models["llama"], None, tmp_path / "run", "custom", "lora", **over))
    assert record["metrics"]["n"] == 4 and record["train"]["examples"] == 12
    assert record["validation"]["examples"] == 2  # 10 % of the 20 training rows held out
    prov = record["provenance"]
    assert prov["dataset"]["dataset"] == str(folder) and set(prov["dataset"]["fingerprints"]) == {"train", "test"}


def test_single_file_and_bad_names(saved, tmp_path):
    p = posts(10)
    (tmp_path / "one.csv").write_text("body,topic\n" + "".join(f"{b},{LABELS[t]}\n" for b, t in zip(p["body"], p["topic"])))
    rows = load_task(cfg(dataset=str(tmp_path / "one.csv"), test_split="train", validation_fraction=0).data, 1,
                     ("test",))
    assert len(rows["test"]) == 10
    with pytest.raises(HubError, match="has no split 'test'; splits: train"):
        load_task(cfg(dataset=str(tmp_path / "one.csv")).data, 1, ("test",))
    with pytest.raises(HubError, match=r"has no column 'text' \(columns: body, topic\)"):
        load_task(cfg(dataset=str(saved), input_column="text").data, 1, ("test",))
    with pytest.raises(HubError, match="dataset 'no-such-org/no-such-set' could not be loaded"):
        load_task(cfg(dataset="no-such-org/no-such-set").data, 1, ("test",))
    with pytest.raises(HubError, match="needs --dataset, or --train_file and --test_file"):
        load_task(cfg().data, 1, ("test",))
