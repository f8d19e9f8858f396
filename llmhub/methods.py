"""A method is configuration: one function turns `method.*` into a trainable model.

QLoRA is LoRA on a 4-bit nf4 base (quantisation happens at load time, see models.load_base_model);
DoRA is LoRA with peft's weight-decomposed update (`use_dora`): the same targets, rank and alpha.
`target_modules: [all-linear]` adapts every linear layer but the output layer (peft's own rule).
"""
from __future__ import annotations

from contextlib import contextmanager

from .errors import HubError
from .models import IA3_TARGETS, default_lora_targets

METHODS = ("lora", "qlora", "dora", "prefix", "prompt", "ia3", "full")
LORA_METHODS = ("lora", "qlora", "dora")


def check_method(name: str) -> None:
    if name not in METHODS:
        raise HubError(f"unknown method '{name}'; allowed: {', '.join(METHODS)}")


def task_type(family: str):
    from peft import TaskType

    return {"seq2seq": TaskType.SEQ_2_SEQ_LM, "causal": TaskType.CAUSAL_LM,
            "encoder": TaskType.SEQ_CLS}[family]


def peft_config(method_cfg, model_config, family: str):
    """The peft config of a method, or None for full fine-tuning."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig

    m = method_cfg.method
    check_method(m)
    tt = task_type(family)
    if m in LORA_METHODS:
        return LoraConfig(task_type=tt, r=method_cfg.lora_r, lora_alpha=method_cfg.lora_alpha,
                          lora_dropout=method_cfg.lora_dropout, target_modules=_targets(method_cfg, model_config),
                          use_dora=m == "dora", use_rslora=getattr(method_cfg, "use_rslora", False))
    if m == "ia3":
        if method_cfg.target_modules:
            targets, ff = method_cfg.target_modules, []
        elif model_config.model_type in IA3_TARGETS:
            targets, ff = IA3_TARGETS[model_config.model_type]
        else:
            raise HubError(f"no default IA3 targets for architecture '{model_config.model_type}'; "
                           "pass them with --target_modules")
        return IA3Config(task_type=tt, target_modules=targets, feedforward_modules=ff)
    if m == "prefix":
        return PrefixTuningConfig(task_type=tt, num_virtual_tokens=method_cfg.num_virtual_tokens,
                                  prefix_projection=method_cfg.prefix_projection)
    if m == "prompt":
        return PromptTuningConfig(task_type=tt, num_virtual_tokens=method_cfg.num_virtual_tokens)
    return None


def _targets(method_cfg, model_config):
    """The LoRA targets: the given names, peft's "all-linear" shorthand, or the architecture's default."""
    targets = method_cfg.target_modules or default_lora_targets(model_config)
    return "all-linear" if targets == ["all-linear"] else targets


def wrap(model, method_cfg, family: str):
    """Attach the method's trainable parameters to a freshly loaded base model."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    cfg = peft_config(method_cfg, model.config, family)
    if cfg is None:
        return keep_trainable_fp32(model)
    if method_cfg.method == "qlora" and _has_fp16_weights(model):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, cfg)
    if family == "encoder":  # the new classification head trains with every method
        for name, p in model.named_parameters():
            if "classifier" in name or "score" in name:
                p.requires_grad = True
    return keep_trainable_fp32(model)


def _has_fp16_weights(model) -> bool:
    """Whether a 4-bit base keeps fp16 weights beside the nf4 ones, which peft's
    prepare_model_for_kbit_training then upcasts to fp32 (fp16 overflows above 65,504; its other step,
    freezing the base, get_peft_model does too). Frozen bf16 weights (embedding, tied output layer,
    norms) stay bf16, as under a bf16 LoRA base: bf16 has fp32's exponent range, its values are the
    same after an upcast, and autocast multiplies in bf16 anyway. An fp32 copy of SmolLM2-135M's
    49,152 x 576 embedding is 108 MiB, plus a 54 MiB bf16 cast of it that autocast makes for the
    output layer in every forward and keeps for the backward."""
    import torch

    return any(p.dtype == torch.float16 for p in model.parameters())


def keep_trainable_fp32(model):
    """On the CPU, trainable weights (and so their gradients and optimizer state) are fp32 under a
    bf16 base: bf16 keeps 8 mantissa bits, too few to accumulate small updates; the frozen base stays
    bf16 and autocast runs the matmuls in bf16. On GPUs the loaded dtype is kept as before."""
    import torch

    if not torch.cuda.is_available():
        for p in model.parameters():
            if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
                p.data = p.data.float()
    return model


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


@contextmanager
def adapter_input_casting(model, autocast_on_cpu: bool):
    """While a model trains under bf16 autocast on the CPU, peft's cast of each adapter's input to
    its fp32 weight dtype is pure overhead (a copy of every [batch, seq, hidden] activation and the
    dropout mask drawn in fp32), since autocast multiplies in bf16 anyway: it is turned off inside
    the block (peft's `cast_input_dtype_enabled` switch; its own context manager fails on IA3
    layers, which lack the attribute) and back on after it, for evaluation without autocast.
    Measured on a CPU with AVX512-BF16: ~8 % more tokens/s (benchmarks/README.md). GPUs keep
    peft's default."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)] if autocast_on_cpu else []
    for m in layers:
        m.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for m in layers:
            m.cast_input_dtype_enabled = True
