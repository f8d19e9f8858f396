"""Zero-/few-shot baselines: the base model with no adapter, prompted through the prompt module.

Checks the results' shape, deterministic one-example-per-class selection, examples shortened to fit
the context without cutting one mid-way, over-long test prompts counted (not dropped, not crashed
on), and one-line errors with a non-zero exit for bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmhub import prompts
from llmhub.baseline import run_baseline
from llmhub.config import RunConfig, apply_overrides
from llmhub.data import load_split

ROOT = Path(__file__).resolve().parents[2]


def baseline_config(model_dir, data_dir, out, task, **extra) -> RunConfig:
    over = {"pretrained_ckpt": str(model_dir), "method": "lora", "task": task, "data_dir": str(data_dir),
            "output_dir": str(out), "test_samples": 4, "max_new_tokens": 6, "eval_batch_size": 4, **extra}
    return apply_overrides(RunConfig(), over)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_example_selection_is_deterministic_one_per_class(data_dir):
    cfg = baseline_config("x", data_dir, "x", "classification")
    rows = load_split(cfg.data, "train")
    labels = sorted({r["target"] for r in rows})
    picked = prompts.select_examples(rows, "classification", labels, seed=42)
    assert [ex["target"] for ex in picked] == labels  # one per class, in label order
    again = prompts.select_examples(list(reversed(rows)), "classification", labels, seed=42)
    assert [ex["id"] for ex in again] == [ex["id"] for ex in picked]  # independent of row order
    dialogues = load_split(baseline_config("x", data_dir, "x", "summarization").data, "train")
    assert len(prompts.select_examples(dialogues, "generation", [], seed=42)) == prompts.FEW_SHOT_SUMMARIES


@pytest.mark.parametrize("mode", ["zero-shot", "few-shot"])
def test_classification_baseline(tiny_models, data_dir, tmp_path, mode):
    out = tmp_path / mode
    record = run_baseline(baseline_config(tiny_models["llama"], data_dir, out, "classification"), mode)
    assert record["mode"] == mode and record["train"] is None
    assert {"accuracy", "f1_macro", "unmatched_rate", "n"} <= set(record["metrics"])
    assert record["metrics"]["n"] == 4
    info = record["prompts"]
    assert info["context_length"] == 1024 and info["prompt_budget"] == 1024 - 6
    assert info["over_context"] == 0 and info["max_prompt_tokens"] <= info["prompt_budget"]
    for name in ("config.yaml", "predictions.jsonl", "results.json", "prompt_example.txt"):
        assert (out / name).exists(), name
    preds = read_jsonl(out / "predictions.jsonl")
    assert len(preds) == 4 and all({"id", "reference", "prediction", "prompt_tokens"} <= set(p) for p in preds)
    prompt = (out / "prompt_example.txt").read_text()
    labels = sorted({r["target"] for r in load_split(apply_overrides(RunConfig(), {
        "task": "classification", "data_dir": str(data_dir)}).data, "train")})
    assert "exactly one" in prompt and all(label in prompt for label in labels)
    n_shots = prompt.count("### Class:") - 1
    assert n_shots == (len(labels) if mode == "few-shot" else 0)
    if mode == "few-shot":
        assert [ex["target"] for ex in info["examples"]] == labels
    check_provenance(record, data_dir, tiny_models["llama"], ("train", "test"))


def check_provenance(record: dict, data_dir: Path, model_dir: Path, splits: tuple) -> None:
    """results.json names every data file it read and the model weights by sha256, and its schema."""
    import hashlib

    assert record["schema_version"] == 2
    files = {"train": data_dir / "newsgroups" / "train.jsonl.gz", "test": data_dir / "newsgroups" / "test.jsonl"}
    assert record["provenance"]["data_files"] == {
        str(files[s]): hashlib.sha256(files[s].read_bytes()).hexdigest() for s in splits}
    model = record["provenance"]["model"]
    assert model["path"].endswith(model_dir.name) and set(model["weights_sha256"]) == {"model.safetensors"}
    weights = (model_dir / "model.safetensors").read_bytes()
    assert model["weights_sha256"]["model.safetensors"] == hashlib.sha256(weights).hexdigest()


def test_few_shot_summarization_has_two_examples(tiny_models, data_dir, tmp_path):
    out = tmp_path / "fs"
    record = run_baseline(baseline_config(tiny_models["gpt_neox"], data_dir, out, "summarization"), "few-shot")
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum"} <= set(record["metrics"])
    assert len(record["prompts"]["examples"]) == 2
    assert (out / "prompt_example.txt").read_text().count("### Summary:") == 3


def test_long_prompts_are_counted_and_examples_shortened(tiny_models, tmp_path):
    """A 3,000-word test input cannot fit the 1,024-token context: it is shortened, predicted,
    scored and counted; few-shot examples longer than their share are shortened, never cut."""
    words = "orbit rocket nasa launch moon".split()
    long_text = " ".join(words[i % 5] for i in range(3000))
    train = [{"text": f"{lab} " + " ".join(words) * (40 if lab == "b" else 1), "label": lab} for lab in "abc"]
    test = [{"text": "moon launch", "label": "a"}, {"text": long_text, "label": "b"}, {"text": "nasa", "label": "c"}]
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = baseline_config(tiny_models["llama"], tmp_path, tmp_path / "exp", "custom", kind="classification",
                          train_file=str(tmp_path / "train.jsonl"), test_file=str(tmp_path / "test.jsonl"),
                          input_column="text", target_column="label", test_samples=None,
                          max_source_length=300)
    record = run_baseline(cfg, "few-shot")
    info = record["prompts"]
    assert info["over_context"] == 1 and info["over_context_ids"] == ["1"]
    assert record["metrics"]["n"] == 3  # nothing dropped
    assert info["max_prompt_tokens"] <= info["prompt_budget"]
    preds = read_jsonl(tmp_path / "exp" / "predictions.jsonl")
    assert [p["over_context"] for p in preds] == [False, True, False]
    # the long example ("b", ~200 words) was shortened to its share; the others kept whole
    shown = {ex["target"]: ex["input_tokens"] for ex in info["examples"]}
    assert shown["b"] < shown["a"] * 40
    prompt = (tmp_path / "exp" / "prompt_example.txt").read_text()
    assert prompt.count("### Class: ") == 4 and "### Class: b\n\n" in prompt  # every example whole


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          env=env, timeout=180)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def test_unknown_baseline_task_fails_in_one_line(tiny_models, data_dir, tmp_path):
    proc = run_script("llama2/llama2_baseline_inference.py", "--task", "translation", "--pretrained_ckpt",
                      str(tiny_models["llama"]), "--data_dir", str(data_dir), "--output_dir", str(tmp_path / "x"))
    assert "no baseline prompt for task 'translation'" in one_line_error(proc)
    assert not (tmp_path / "x").exists()


def test_few_shot_that_cannot_fit_fails_in_one_line(tiny_models, data_dir, tmp_path):
    # Falcon's 2,048-token context minus 2,000 new tokens leaves 48: too few for 4 examples
    proc = run_script("falcon/falcon_baseline_inference.py", "--prompt", "few-shot", "--pretrained_ckpt",
                      str(tiny_models["falcon"]), "--data_dir", str(data_dir), "--max_new_tokens", "2000",
                      "--output_dir", str(tmp_path / "x"))
    assert "few-shot prompt cannot fit" in one_line_error(proc)
    assert not (tmp_path / "x").exists()


def test_provenance_paths_name_no_checkout(tmp_path, monkeypatch):
    from llmhub.results import shareable_path

    installed = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "some_model" / "model"
    installed.mkdir(parents=True)
    assert shareable_path(installed) == "site-packages/some_model/model"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert shareable_path(tmp_path / "models" / "mine") == "models/mine"
