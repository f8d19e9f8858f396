"""OpenAI's API on our server, driven by the real `openai` client against a real uvicorn process on
a tiny trained LoRA experiment: answers equal transformers' own decoding, streams equal whole
answers, sampling fields are honoured (seed, top_p, stop, n) or refused with 422, usage counts
tokens, and a client that drops a stream frees its place in the batch."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch

from llmhub.serve.process import ServerProcess
from llmhub.serve.predictor import Predictor
from test_server import scrape, trained_experiment

CHAT_TEMPLATE = ("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}### assistant:{% endif %}")
PROMPT = "### Dialogue: Anna: are you coming to lunch?\nBen: yes\n### Summary:"


@pytest.fixture(scope="module")
def exp(tmp_path_factory, tiny_models, data_dir) -> Path:
    # fp32: the server's batches must not flip a bf16 near-tie of this random tiny model (auto is bf16
    # on CPUs with fast native bf16), or its answers would differ from one-by-one greedy decoding
    out = trained_experiment(tmp_path_factory.mktemp("openai"), tiny_models["llama"], data_dir, torch_dtype="float32")
    (out / "model" / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return out


@pytest.fixture(scope="module")
def server(exp):
    args = ["--experiment_dir", str(exp), "--mode", "batched", "--max_wait_ms", "30", "--max_new_tokens_limit", "64"]
    with ServerProcess(args) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def local(exp):
    """The experiment's model in this process: what the server should answer."""
    p = Predictor.from_experiment(exp)
    return p.model, p.tokenizer


def greedy(local, prompt: str, max_new_tokens: int, special: bool = True) -> tuple[str, int, int]:
    """transformers' greedy decoding: (text, prompt tokens, generated tokens up to EOS)."""
    model, tok = local
    ids = torch.tensor([tok(prompt, add_special_tokens=special)["input_ids"]])
    out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
    if tok.eos_token_id in out:
        out = out[: out.index(tok.eos_token_id) + 1]
    return tok.decode(out, skip_special_tokens=True), ids.shape[1], len(out)


def test_models_lists_the_adapter_and_its_base(client, exp, tiny_models):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {exp.resolve().name, Path(tiny_models["llama"]).resolve().name}
    assert models[exp.resolve().name].model_extra["parent"] == Path(tiny_models["llama"]).resolve().name


def test_completion_equals_transformers_greedy(client, exp, local):
    r = client.completions.create(model=exp.resolve().name, prompt=PROMPT, max_tokens=12, temperature=0)
    text, prompt_tokens, generated = greedy(local, PROMPT, 12)
    assert r.choices[0].text == text
    assert r.choices[0].finish_reason == ("length" if generated == 12 else "stop")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt_tokens, generated)
    assert r.usage.total_tokens == prompt_tokens + generated


def test_the_base_model_answers_without_the_adapter(client, tiny_models, local):
    model, tok = local
    with model.disable_adapter():
        text, _, _ = greedy(local, PROMPT, 12)
    r = client.completions.create(model=Path(tiny_models["llama"]).resolve().name, prompt=PROMPT,
                                  max_tokens=12, temperature=0)
    assert r.choices[0].text == text


def test_stream_equals_the_whole_answer(client, exp):
    name = exp.resolve().name
    whole = client.completions.create(model=name, prompt=PROMPT, max_tokens=16, temperature=0)
    chunks = list(client.completions.create(model=name, prompt=PROMPT, max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # token by token, not one lump
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_uses_the_tokenizer_template(client, exp, local):
    messages = [{"role": "system", "content": "Summarize."}, {"role": "user", "content": "Anna: lunch?\nBen: yes"}]
    prompt = local[1].apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("### assistant:")
    text, prompt_tokens, _ = greedy(local, prompt, 10, special=False)
    r = client.chat.completions.create(model=exp.resolve().name, messages=messages, max_tokens=10, temperature=0)
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == text
    assert r.usage.prompt_tokens == prompt_tokens
    chunks = list(client.chat.completions.create(model=exp.resolve().name, messages=messages, max_tokens=10,
                                                 temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text


def test_seed_n_top_p_and_stop_are_honoured(client, exp):
    name = exp.resolve().name
    ask = dict(model=name, prompt=PROMPT, max_tokens=12, temperature=1.0)
    a = [c.text for c in client.completions.create(**ask, n=3, seed=7).choices]
    b = [c.text for c in client.completions.create(**ask, n=3, seed=7).choices]
    c = [c.text for c in client.completions.create(**ask, n=3, seed=8).choices]
    assert len(a) == 3 and a == b and a != c
    # top_p this small keeps one token per step: the seed no longer matters
    assert [c.text for c in client.completions.create(**ask, n=3, seed=7, top_p=1e-6).choices] == \
        [c.text for c in client.completions.create(**ask, n=3, seed=8, top_p=1e-6).choices]
    greedy_text = client.completions.create(model=name, prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text
    stop = greedy_text.strip()[2:5]
    assert len(stop) == 3, greedy_text
    r = client.completions.create(model=name, prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop, "zzz"])
    assert r.choices[0].text == greedy_text[: greedy_text.index(stop)] and r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("extra, words", [
    ({"logprobs": 2}, "'logprobs' is not supported"),
    ({"presence_penalty": 0.5}, "'presence_penalty' is not supported"),
    ({"extra_body": {"mirostat_tau": 5}}, "unknown field 'mirostat_tau'"),
    ({"n": 0}, "n is 0"),
    ({"temperature": 3}, "temperature is 3"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop must be"),
    ({"max_tokens": 65}, "max_tokens is 65; allowed: 1 to 64"),
    ({"prompt": ["one", "two"]}, "field 'prompt' must be a string"),
])
def test_what_is_not_done_is_refused(client, exp, extra, words):
    ask = {"model": exp.resolve().name, "prompt": PROMPT, "max_tokens": 4, **extra}
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.completions.create(**ask)
    assert words in e.value.body["message"], e.value.body


def test_limits_unknown_model_key_and_missing_template(client, server, tiny_models):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="hi", max_tokens=2)
    assert "unknown model 'nope'; allowed:" in e.value.body["message"]
    with pytest.raises(openai.APIStatusError) as e:  # over --max_input_tokens (2048)
        client.completions.create(model=client.models.list().data[0].id, prompt="ok " * 3000, max_tokens=2)
    assert e.value.status_code == 413 and "the limit is 2048 tokens" in e.value.body["message"]
    args = ["--model", str(tiny_models["llama"]), "--task", "summarization"]
    with ServerProcess(args, env={"LLMHUB_API_KEY": "s3cret"}) as plain:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=plain.url + "/v1", api_key="wrong", max_retries=0).models.list()
        c = openai.OpenAI(base_url=plain.url + "/v1", api_key="s3cret", max_retries=0)
        with pytest.raises(openai.UnprocessableEntityError) as e:
            c.chat.completions.create(model=Path(tiny_models["llama"]).resolve().name,
                                      messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert "has no chat template" in e.value.body["message"]


def test_seq2seq_decoding_equals_generate(tiny_models):
    """The /v1 decoder (per-row criteria) on an encoder-decoder model: T5's greedy answers."""
    from llmhub.serve.decoding import Job, Sampling, decode
    from llmhub.models import load_base_model, load_tokenizer

    tok = load_tokenizer(str(tiny_models["t5"]), "seq2seq")
    model = load_base_model(str(tiny_models["t5"]), "seq2seq", torch.float32).eval()
    prompts = ["summarize: Anna: lunch?", "summarize: Ben: the exam is at 9, are you coming?"]
    got = decode(model, tok, [Job(p, Sampling(6, 0.0)) for p in prompts], "seq2seq")
    for p, (choice,) in zip(prompts, got):
        ids = tok(p, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=6, do_sample=False)[0, 1:].tolist()  # after the decoder start
        out = out[: out.index(tok.eos_token_id) + 1] if tok.eos_token_id in out else out
        assert choice.text == tok.decode(out, skip_special_tokens=True) and choice.tokens == len(out)


def test_a_dropped_stream_frees_its_slot(exp):
    args = ["--experiment_dir", str(exp), "--mode", "naive", "--max_new_tokens_limit", "20000"]
    with ServerProcess(args) as srv:
        body = {"model": exp.resolve().name, "prompt": PROMPT, "max_tokens": 20000, "temperature": 0,
                "ignore_eos": True, "stream": True}  # runs for minutes unless stopped
        with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                    break  # one token arrived; hang up
        cancelled = ("llmhub_cancelled_choices_total", ())
        deadline = time.monotonic() + 120
        while scrape(srv).get(cancelled, 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scrape(srv)[cancelled] == 1
        assert httpx.get(srv.url + "/health").json()["in_flight"] == 0
        # the single slot (naive mode) serves the next request
        r = httpx.post(srv.url + "/v1/completions", timeout=60,
                       json={"model": exp.resolve().name, "prompt": PROMPT, "max_tokens": 3})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        m = scrape(srv)
        assert m[("llmhub_requests_total", (("code", "499"), ("endpoint", "v1/completions")))] == 1
