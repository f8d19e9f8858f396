"""The models table: seeds pooled per (model, setup), intervals over per-example averages, paired p
against the reference row, the learning rate chosen by the search beside the screened ones, a scaling
plot, and the original study's table labelled as reference; other tables leave these runs out."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmhub.study import model_study, report
from llmhub.study.records import load_records
from test_report import acc, declare, fake, rouge

REFS = ["A is coming.", "B is not coming.", "C wants lunch.", "D has a new car."]


def run(root: Path, name: str, model: str, r1: float, preds: list[str], mode="finetune", seed=42, lr=3e-4,
        total=100_000_000):
    path = fake(root, f"llama2/study/{name}", rouge(r1), mode=mode, pretrained_ckpt=model, task="summarization",
                method="lora", seed=seed, learning_rate=lr)
    data = json.loads(path.read_text())
    if data["train"]:
        data["train"]["total_params"], data["train"]["trainable_params"] = total, 1_000_000
    path.write_text(json.dumps(data))
    rows = [{"id": str(i), "reference": ref, "prediction": p} for i, (ref, p) in enumerate(zip(REFS, preds))]
    (path.parent / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture()
def study(tmp_path) -> Path:
    root = tmp_path / "results"
    declare(root, "llama2/study", "models", ["pretrained_ckpt", "method", "mode", "seed"])
    sweep = root / "llama2" / "study" / "sweep.json"
    sweep.write_text(json.dumps({**json.loads(sweep.read_text()),
                                 "study": {"kind": "models", "varied": ["pretrained_ckpt", "method", "mode", "seed"],
                                           "reference": "small_lora_s42"}}))
    run(root, "small_zero", "small", 10.0, ["nothing", "nothing", "nothing", "nothing"], mode="zero-shot")
    run(root, "small_lora_s42", "small", 40.0, ["A is coming.", "B is coming.", "C lunch.", "car"], seed=42)
    run(root, "small_lora_s43", "small", 44.0, ["A is coming.", "B is not.", "C wants.", "D car"], seed=43)
    run(root, "big_lora_s42", "big", 60.0, REFS, seed=42, total=1_500_000_000)
    for lr, loss in ((1e-4, 2.5), (3e-4, 2.1), (1e-3, 2.3)):
        screen = fake(root, f"llama2/study/screen/small_lora_learning_rate-{lr}", {}, pretrained_ckpt="small",
                      method="lora", learning_rate=lr)
        data = json.loads(screen.read_text())
        screen.write_text(json.dumps({**data, "mode": "screen", "validation": {"loss": loss}}))
    fake(root, "llama2/other/lora", rouge(30.0), pretrained_ckpt="other", task="summarization")
    return root


def test_models_table_pools_seeds(study):
    records = load_records(study)
    assert "screen" not in {r.path.parent.parent.name for r in records}
    text = model_study.table(records)
    rows = [line for line in text.splitlines() if line.startswith("| small") or line.startswith("| big")]
    assert [r.split(" | ")[2] for r in rows] == ["zero-shot", "LoRA", "LoRA"]  # by size, then setup
    lora = rows[1].split(" | ")
    assert lora[3] == "2" and lora[4] == "42.00 ± 2.83"  # two seeds: mean and standard deviation
    # Words: the answers' mean length over both seeds (9 and 10 words in 4 answers each), the references'
    # (15 words in 4) in the note
    assert lora[8] == "2.4" and rows[0].split(" | ")[8] == "1.0" and rows[2].split(" | ")[8] == "3.8"
    assert "Words: the generated summaries' mean length in words (the references': 3.8)." in text
    assert lora[9] == "ref" and rows[2].split(" | ")[1] == "1.50B"
    assert "**0.0003** of 0.0001 (2.500), 0.0003 (2.100), 0.001 (2.300) |" in rows[1]
    low, high = map(float, lora[5].strip("[]").split(", "))
    assert low <= high
    assert "original study: full SAMSum train split" in text and "| Llama-2-13B | 13B | QLoRA | 52.97 | 28.32 |" in text
    # the other tables leave the models study out; the methods table does not list its runs
    tables = report.build(records)
    assert "small_lora_s42" not in tables["methods"] and "small_lora_s42" not in tables["sweeps"]
    assert "small_lora_s42" not in tables["cost"] and tables["models"] == text


def test_a_value_screened_after_the_run_that_wins_is_named(study):
    screen = fake(study, "llama2/study/screen/small_lora_learning_rate-0.003", {}, pretrained_ckpt="small",
                  method="lora", learning_rate=3e-3)  # e.g. by the grid's `extend`, after the runs trained
    screen.write_text(json.dumps({**json.loads(screen.read_text()), "mode": "screen", "validation": {"loss": 2.0}}))
    row = next(line for line in model_study.table(load_records(study)).splitlines() if "| small | " in line
               and "LoRA" in line)
    assert ("**0.0003** of 0.0001 (2.500), 0.0003 (2.100), 0.001 (2.300), 0.003 (2.000); lowest since: 0.003 "
            "(screened after this row trained)") in row


def test_a_second_rung_shows_full_length_losses_and_names_a_finalist_that_wins(study):
    lead = study / "llama2/study/small_lora_s42/results.json"  # the row's run of the full-length runs' seed
    lead.write_text(json.dumps({**json.loads(lead.read_text()), "validation": {"loss": 1.9}}))
    full = fake(study, "llama2/study/screen/small_lora_learning_rate-0.001_full", {}, pretrained_ckpt="small",
                method="lora", learning_rate=1e-3, seed=42)
    full.write_text(json.dumps({**json.loads(full.read_text()), "mode": "screen", "validation": {"loss": 1.8}}))
    row = next(line for line in model_study.table(load_records(study)).splitlines() if "| small | " in line
               and "LoRA" in line)
    assert ("**0.0003** of 0.0001 (2.500), 0.0003 (2.100), 0.001 (2.300); full length (seed 42): 0.0003 (1.900), "
            "0.001 (1.800); lowest at full length: 0.001 |") in row
    full.write_text(json.dumps({**json.loads(full.read_text()), "validation": {"loss": 2.0}}))
    assert "0.0003 (1.900), 0.001 (2.000) |" in model_study.table(load_records(study))  # the row's rate stands
    # the lead retrained with the finalist's value (1e-3, the old lead kept as 3e-4's full-length run):
    # each value once, the full-length runs' losses
    full.write_text(json.dumps({**json.loads(full.read_text()), "validation": {"loss": 1.8}}))
    fake(study, "llama2/study/screen/small_lora_learning_rate-0.0003_full", {}, pretrained_ckpt="small", method="lora",
         learning_rate=3e-4, seed=42).write_text(lead.read_text())
    lead.write_text(json.dumps({**json.loads(lead.read_text()), "validation": {"loss": 1.81}}))
    retrained = json.loads(lead.read_text())
    retrained["config"]["train"]["learning_rate"] = 1e-3
    lead.write_text(json.dumps(retrained))
    records = load_records(study)
    row = next(line for line in model_study.table(records).splitlines() if "| small | " in line and "LoRA" in line)
    assert "full length (seed 42): 0.0003 (1.900), 0.001 (1.800) |" in row
    # the kept lead (mode finetune, a test score) is the search's, not a result of any table
    assert not [r for r in records if "screen" in r.path.parts]


def test_scaling_plot_is_drawn(study, tmp_path):
    paths = model_study.plot_scaling(load_records(study), tmp_path / "assets")
    (path,) = paths.values()
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_a_classification_study_is_tabled_on_accuracy(tmp_path):
    root = tmp_path / "results"
    declare(root, "llama2/ng", "models", ["pretrained_ckpt"])
    labels = ["a", "b", "a", "c"]
    for name, model, a, preds in (("small_lora", "small", 50.0, ["a", "b", "c", "c"]),
                                  ("encoder_full", "encoder", 75.0, ["a", "b", "a", "a"])):
        path = fake(root, f"llama2/ng/{name}", acc(a), examples=1066, pretrained_ckpt=model, task="classification",
                    method="lora" if model == "small" else "full")
        (path.parent / "predictions.jsonl").write_text("".join(
            json.dumps({"id": str(i), "reference": ref, "prediction": p, "label": p}) + "\n"
            for i, (ref, p) in enumerate(zip(labels, preds))))
    text = model_study.table(load_records(root))
    assert "| Accuracy | 95 % interval | Macro F1 | p vs encoder " in text  # no reference declared: the first row
    full = next(line for line in text.splitlines() if line.startswith("| encoder")).split(" | ")
    assert full[4] == "75.00" and full[6] == "74.00"  # accuracy, then macro F1
    assert "SAMSum" not in text  # the original study's 20 Newsgroups figures at the study's post count instead
    assert "| Flan-T5-Large + LoRA | 73.38 |" in text and "1066 posts" in text
    (path,) = model_study.plot_scaling(load_records(root), tmp_path / "assets").values()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
