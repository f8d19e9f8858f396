"""Prompt formats wired through a run: a user template (text or file) is saved in config.yaml and
used by training, evaluation and the real server; `auto` gives zero-/few-shot baselines the chat
template only when the tokenizer has one; fine-tuning through a chat template works end to end."""
from __future__ import annotations

import shutil

import httpx
import pytest
import yaml
from transformers import AutoTokenizer

from llmhub.serve.process import ServerProcess
from llmhub import train as train_mod
from llmhub.baseline import run_baseline
from llmhub.errors import HubError
from llmhub.experiment import prepare, train_experiment
from llmhub.serve.predictor import Predictor
from test_experiments import tiny_config
from test_prompts import CHAT
from test_server import eval_rows

TEMPLATE = "Conversation:\n{input}\nTL;DR:"


@pytest.fixture(scope="module")
def chat_llama(tmp_path_factory, tiny_models):
    """The tiny Llama with a chat template in its tokenizer."""
    out = tmp_path_factory.mktemp("chat-llama")
    shutil.copytree(tiny_models["llama"], out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = CHAT
    tok.save_pretrained(out)
    return out


def test_template_file_round_trips_through_config_training_and_the_server(tiny_models, data_dir, tmp_path):
    (tmp_path / "t.txt").write_text(TEMPLATE)
    out = tmp_path / "exp"
    cfg = tiny_config(tiny_models["llama"], data_dir, out, "summarization", "lora", prompt_template=str(tmp_path / "t.txt"))
    s = prepare(cfg, ("train", "test"))
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    feats = train_mod.tokenize_rows(s.splits["train"][:1], tok, s.family, s.style, s.kind, cfg.data)
    assert tok.decode(feats[0]["input_ids"]).startswith("Conversation:\n")  # training reads the template
    train_experiment(cfg)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["prompt_template"] == TEMPLATE  # the text itself, not the file's path
    assert saved["data"]["prompt_format"] == "auto"
    p = Predictor.from_experiment(out)
    assert p.render(["A: hi"]) == [TEMPLATE.format(input="A: hi")]
    rows = eval_rows(out)
    with ServerProcess(["--experiment_dir", str(out), "--mode", "batched", "--max_wait_ms", "20"]) as srv:
        for row in rows:
            r = httpx.post(srv.url + "/predict", json={"prompt": row["input"]}, timeout=60)
            assert r.status_code == 200 and r.json()["prediction"] == row["expected"], r.text


def test_fine_tuning_through_the_chat_template(chat_llama, data_dir, tmp_path):
    out = tmp_path / "chat"
    cfg = tiny_config(chat_llama, data_dir, out, "summarization", "lora", prompt_format="chat")
    s = prepare(cfg, ("train", "test"))
    tok = AutoTokenizer.from_pretrained(chat_llama)
    feats = train_mod.tokenize_rows(s.splits["train"][:1], tok, s.family, s.style, s.kind, cfg.data)
    text = tok.decode(feats[0]["input_ids"])
    assert text.startswith("<|user|>### Dialogue:") and "<|assistant|>" in text
    train_experiment(cfg)
    assert Predictor.from_experiment(out).render(["A: hi"]) == ["<|user|>### Dialogue: A: hi\n### Summary:\n<|assistant|>"]
    # auto keeps fine-tuning on the plain template even when the tokenizer has a chat one
    auto = tiny_config(chat_llama, data_dir, tmp_path / "auto", "summarization", "lora")
    assert train_mod.build_prompts(tok, "causal", "generation", ["A: hi"], 96,
                                   train_mod.prompts.for_run(auto.data, tok)) == ["### Dialogue: A: hi\n### Summary: "]


@pytest.mark.parametrize("mode", ["zero-shot", "few-shot"])
def test_auto_baselines_use_the_chat_template_only_when_the_tokenizer_has_one(tiny_models, chat_llama, data_dir,
                                                                              tmp_path, mode):
    for name, model, expect in (("chat", chat_llama, "chat"), ("plain", tiny_models["llama"], "plain")):
        out = tmp_path / name
        record = run_baseline(tiny_config(model, data_dir, out, "summarization", "lora", test_samples=2), mode)
        assert record["prompts"]["format"] == expect
        prompt = (out / "prompt_example.txt").read_text()
        if expect == "chat":
            assert prompt.startswith("<|system|>Summarize the dialogue") and prompt.endswith("<|assistant|>")
            # few-shot: each example is a user turn answered by an assistant turn
            assert prompt.count("<|assistant|>") == (3 if mode == "few-shot" else 1)
        else:
            assert prompt.startswith("Summarize the dialogue") and "<|" not in prompt
    forced = tiny_config(tiny_models["llama"], data_dir, tmp_path / "x", "summarization", "lora", test_samples=2,
                         prompt_format="chat")
    with pytest.raises(HubError, match="needs a tokenizer with a chat template"):
        run_baseline(forced, mode)


def test_bad_template_is_one_clear_error(tiny_models, data_dir, tmp_path):
    for bad, words in (("no-such-file.txt", "must contain {input} or name a file"),
                       ("{input} and {other}", "no other {field}")):
        cfg = tiny_config(tiny_models["llama"], data_dir, tmp_path / "e", "summarization", "lora", prompt_template=bad)
        with pytest.raises(HubError, match=words.replace("{", r"\{").replace("}", r"\}")):
            prepare(cfg)
    with pytest.raises(HubError, match="unknown prompt_format 'fancy'; allowed: auto, plain, chat"):
        tiny_config(tiny_models["llama"], data_dir, tmp_path / "e", "summarization", "lora", prompt_format="fancy")
