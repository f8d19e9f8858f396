"""Offline models shipped as GGUF chunks on PyPI: assembled in part order, sha256-checked before
anything reads the file, dequantised once into a safetensors cache that equals the source model,
and refused in one line when a package is missing or changed. The chunk packages are never imported."""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
import torch

from llmhub import models
from llmhub.errors import HubError

N_CHUNKS = 3


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (transformers' GGUF loader undoes it)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(model_dir, path) -> None:
    """The tiny Llama of conftest as a GGUF file (f32 tensors, its byte-level BPE as a gpt2 vocabulary)."""
    import gguf
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    c = model.config
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab += [(f"<unused{i}>", i) for i in range(len(vocab), c.vocab_size)]  # the model's 600 rows
    specials = {t["content"] for t in tok["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in specials else 1 for t, _ in vocab])
    w.add_token_merges(merges)
    w.add_bos_token_id(c.bos_token_id)
    w.add_eos_token_id(c.eos_token_id)
    w.add_pad_token_id(c.pad_token_id)
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
    names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(c.num_hidden_layers):
        for ours, theirs in names.items():
            key = next(k for k in sd if k.startswith(f"model.layers.{i}.") and f".{ours}.weight" in k)
            t = sd[key]
            if ours in ("q_proj", "k_proj"):
                t = _permute(t, c.num_attention_heads if ours == "q_proj" else c.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{theirs}.weight", np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def gguf_source(tiny_models, tmp_path, monkeypatch):
    """A registry row whose GGUF is split over three importable packages on sys.path."""
    gguf_file = tmp_path / "tiny.gguf"
    write_llama_gguf(tiny_models["llama"], gguf_file)
    data = gguf_file.read_bytes()
    site = tmp_path / "site"
    size = -(-len(data) // N_CHUNKS)
    packages = tuple(f"tinygguf_part{i}" for i in range(1, N_CHUNKS + 1))
    for i, pkg in enumerate(packages):
        (site / pkg / "data").mkdir(parents=True)
        # importing a chunk package would fail loudly: the engine must only find its files
        (site / pkg / "__init__.py").write_text("raise RuntimeError('chunk package code was run')\n")
        (site / pkg / "data" / f"tiny.gguf.part{i:02d}").write_bytes(data[i * size:(i + 1) * size])
    monkeypatch.syspath_prepend(str(site))
    src = models.GGUFSource(packages, "*.gguf.part*", "tiny.gguf", hashlib.sha256(data).hexdigest(), len(data),
                            "pip install tinygguf")
    monkeypatch.setitem(models.REGISTRY, "tiny-gguf", models.ModelSpec("offline:tiny-gguf", "causal", "tiny", "1M", src))
    monkeypatch.setenv("LLMHUB_CACHE", str(tmp_path / "cache"))
    return site, packages


def test_gguf_is_joined_checked_dequantised_and_cached(gguf_source, tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.resolve_path("tiny-gguf")
    assert all(not name.startswith("tinygguf") for name in sys.modules)  # found, never imported
    ours = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(ours.config, "quantization_config", None) is None  # trainable: no GGUF mark
    source = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    ids = torch.tensor([[3, 17, 42, 99, 250, 7]])
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, source(ids).logits, atol=1e-5)
    text = "Anna: are you coming to the party?"
    theirs = AutoTokenizer.from_pretrained(tiny_models["llama"])
    assert AutoTokenizer.from_pretrained(path)(text)["input_ids"][-8:] == theirs(text)["input_ids"][-8:]
    stamp = (models.cache_dir() / "tiny-gguf" / "config.json").stat().st_mtime_ns
    assert models.resolve_path("tiny-gguf") == path  # the cache is reused, not rebuilt
    assert (models.cache_dir() / "tiny-gguf" / "config.json").stat().st_mtime_ns == stamp
    assert not list(models.cache_dir().glob(".tiny-gguf-gguf-*"))  # the joined file is gone
    assert models.installed("tiny-gguf")


def test_a_changed_chunk_is_refused_before_anything_reads_it(gguf_source):
    site, packages = gguf_source
    chunk = next((site / packages[1] / "data").iterdir())
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(HubError) as e:
        models.resolve_path("tiny-gguf")
    message = str(e.value)
    assert "\n" not in message and "tinygguf-part1 ... tinygguf-part3" in message and "sha256" in message
    assert "pip install tinygguf" in message
    assert not (models.cache_dir() / "tiny-gguf").exists()
    assert not list(models.cache_dir().glob(".tiny-gguf-gguf-*"))


def test_a_missing_package_names_the_install_command(gguf_source):
    import importlib
    import shutil

    site, packages = gguf_source
    shutil.rmtree(site / packages[2])
    importlib.invalidate_caches()
    with pytest.raises(HubError, match=r"model 'tiny-gguf' is not installed \(missing package tinygguf-part3\): "
                                       r"run `pip install tinygguf`"):
        models.resolve_path("tiny-gguf")
    assert not models.installed("tiny-gguf")
    assert not (models.cache_dir() / "tiny-gguf").exists()
