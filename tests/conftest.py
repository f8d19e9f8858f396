"""Shared fixtures: tiny randomly initialised models of every family, and tiny task data.

The models are built from configs (a few layers, hidden 32-128) with a byte-level BPE tokenizer
trained on the fixture text, so every test runs on the CPU in seconds and needs no network.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LLMHUB_TEST_DATA", ROOT.parent / "shared" / "data"))
LABELS = ["comp.graphics", "sci.space", "rec.autos", "talk.politics.misc"]
WORDS = {"comp.graphics": "image pixel render polygon shader bitmap",
         "sci.space": "orbit rocket nasa launch moon shuttle",
         "rec.autos": "engine car wheel brake dealer sedan",
         "talk.politics.misc": "vote tax senate policy government law"}
SPECIAL = ["<pad>", "</s>", "<unk>", "<s>"]


# The files with the longest tests (vLLM start-ups, two-rank DeepSpeed, killed and resumed runs),
# slowest first. `make test` hands whole files to two workers in collection order
# (--no-loadscope-reorder): starting these first lets the small files fill in beside them instead
# of leaving one worker alone on test_vllm.py at the end.
LONG_FILES = ["serve/test_vllm.py", "engine/test_deepspeed_cpu.py", "serve/test_continuous.py",
              "engine/test_reliability_crash.py", "engine/test_training.py"]
FILE_RANK = {ROOT / "tests" / name: rank for rank, name in enumerate(LONG_FILES)}


def pytest_collection_modifyitems(items):
    # stable: tests keep their order within a file, and the other files theirs
    items.sort(key=lambda item: FILE_RANK.get(item.path, len(LONG_FILES)))


def _sentence(rng: random.Random, label: str) -> str:
    return " ".join(rng.choice(WORDS[label].split()) for _ in range(rng.randint(5, 14)))


def _dialogue(rng: random.Random, i: int) -> dict:
    names = ["Anna", "Ben", "Cleo", "Dan"]
    a, b = rng.sample(names, 2)
    topic = rng.choice(["the party", "lunch", "the exam", "a new car"])
    lines = [f"{a}: are you coming to {topic}?", f"{b}: yes, see you at {rng.randint(1, 9)}"]
    lines += [f"{rng.choice([a, b])}: ok" for _ in range(rng.randint(0, 4))]
    return {"id": str(1000 + i), "dialogue": "\n".join(lines), "summary": f"{b} is coming to {topic}."}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data folder in the layout of prepare-data: newsgroups, samsum and dialogsum, tiny."""
    import gzip

    rng = random.Random(0)
    root = tmp_path_factory.mktemp("data")
    ng = lambda n: [{"text": f"From: x@y.z\nSubject: hi\n\n{_sentence(rng, lab)}", "label": lab}  # noqa: E731
                    for lab in LABELS for _ in range(n)]
    (root / "newsgroups").mkdir()
    with gzip.open(root / "newsgroups" / "train.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in ng(10)))
    write_jsonl(root / "newsgroups" / "test.jsonl", ng(2))
    for split, n in (("train", 24), ("validation", 4), ("test", 6)):
        write_jsonl(root / "samsum" / f"{split}.jsonl", [_dialogue(rng, i) for i in range(n)])
    # DialogSum's exact shape: id, dialogue, summary, topic; test rows test_N_1..3 share a dialogue.
    train = [{**_dialogue(rng, i), "id": f"train_{i}", "topic": "plans"} for i in range(16)]
    write_jsonl(root / "dialogsum" / "train.jsonl", train)
    write_jsonl(root / "dialogsum" / "validation.jsonl", train[:2])
    test = []
    for n in range(3):
        d = _dialogue(rng, 100 + n)
        for k in (1, 2, 3):
            test.append({"id": f"test_{n}_{k}", "dialogue": d["dialogue"],
                         "summary": d["summary"] if k == 1 else f"summary {k} of dialogue {n}", "topic": "plans"})
    write_jsonl(root / "dialogsum" / "test.jsonl", test)
    return root


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, data_dir) -> Path:
    """A byte-level BPE tokenizer (vocab 600) trained on the fixture text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = []
    for path in data_dir.rglob("*.jsonl"):
        text += [json.dumps(json.loads(line)) for line in path.read_text().splitlines()]
    text += ["### Sentence: ### Class: ### Dialogue: ### Summary: summarize: Classify the following sentence "
             "into a category: The answer is: " + " ".join(LABELS)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", bos_token="<s>")
    out = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(out)
    return out


def _save_model(tmp_path_factory, tokenizer_dir: Path, name: str, model) -> Path:
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp(name)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


def build_tiny(kind: str):
    import torch
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=600, pad_token_id=0, eos_token_id=1, bos_token_id=3)
    if kind == "t5":
        cfg = tf.T5Config(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2,
                          decoder_start_token_id=0, **common)
        return tf.T5ForConditionalGeneration(cfg)
    if kind == "llama":
        cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=4, max_position_embeddings=1024, **common)
        return tf.LlamaForCausalLM(cfg)
    if kind == "falcon":
        cfg = tf.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, new_decoder_architecture=False,
                              multi_query=True, **common)
        return tf.FalconForCausalLM(cfg)
    if kind == "gpt_neox":
        cfg = tf.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               max_position_embeddings=1024, **common)
        return tf.GPTNeoXForCausalLM(cfg)
    if kind == "bert":
        cfg = tf.BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            max_position_embeddings=512, **common)
        return tf.BertModel(cfg)
    if kind == "llama64":  # head_dim 128 / 2 heads = 64: vLLM's CPU attention refuses the 16 of "llama"
        cfg = tf.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                             num_key_value_heads=2, max_position_embeddings=1024, **common)
        return tf.LlamaForCausalLM(cfg)
    if kind == "gemma3":  # Gemma-3-270M's shape in small: tied embeddings, sliding + full attention,
        # one KV head; logit soft-capping on (the real 270M has none) so the capped loss path runs too
        cfg = tf.Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=1, head_dim=64, query_pre_attn_scalar=64, sliding_window=16,
                                  layer_types=["sliding_attention", "full_attention"], max_position_embeddings=1024,
                                  final_logit_softcapping=30.0, **common)
        return tf.Gemma3ForCausalLM(cfg)
    if kind == "qwen2":  # Qwen2.5's shape in small: biased q/k/v, grouped KV heads, tied embeddings
        cfg = tf.Qwen2Config(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                             num_key_value_heads=1, max_position_embeddings=1024, tie_word_embeddings=True, **common)
        return tf.Qwen2ForCausalLM(cfg)
    if kind == "gpt2":  # an architecture with no default LoRA targets
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, **common))
    raise ValueError(kind)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    """Folder per architecture, loadable with from_pretrained like any checkpoint."""
    return {k: _save_model(tmp_path_factory, tokenizer_dir, f"tiny-{k}", build_tiny(k))
            for k in ("t5", "llama", "falcon", "gpt_neox", "bert", "llama64", "gpt2", "gemma3", "qwen2")}


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    """vLLM's own python (inference/vllm/.venv, built by `make test`). Absent, the tests that need it
    fail, since a missing vLLM must not pass as green; only SKIP_VLLM=1 turns that into a skip."""
    from llmhub.serve.vllm_server import VENV_PYTHON

    if VENV_PYTHON.is_file():
        return VENV_PYTHON
    if os.environ.get("SKIP_VLLM"):
        pytest.skip("SKIP_VLLM is set: the vLLM tests were skipped on request")
    pytest.fail(f"vLLM's virtualenv is absent ({VENV_PYTHON}): build it with `make -C inference/vllm venv`, "
                "or opt out with SKIP_VLLM=1", pytrace=False)
