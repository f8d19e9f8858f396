"""Causal-LM training loss at label positions only, and the Trainer that uses it.

A summarization example has ~160-250 prompt tokens masked with -100 and ~30 answer tokens. The
full loss runs the output layer at every position: for SmolLM2 (576 x 49,152) a batch of 8 x 256
tokens makes 8 * 256 * 49,152 * 4 B = 403 MB of fp32 logits and ~30 GFLOP (forward + backward),
~90 % of it for positions nobody trains on. Here the decoder's hidden states are gathered where the
next token is a label first, and only those rows go through the output layer and the loss (fp32).

The gather applies to causal LMs with plain output layers (models.LABEL_POSITION_TYPES) trained in
full or through LoRA/DoRA/QLoRA/IA3, which leave positions where they are. Prefix and prompt tuning
(virtual tokens, extra keys), seq2seq and encoder models take the Trainer's standard loss.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .models import LABEL_POSITION_TYPES

# fp32 logits per output-layer chunk: 256 label positions x SmolLM2's 49,152-word vocabulary,
# 50 MB at once; Gemma 3's 262,144 words get 48 positions per chunk (a bf16 LoRA step of
# Gemma-3-270M at 8 x 384 tokens peaked 150 MiB higher with 192). Longer answers run chunk by
# chunk, each recomputed in the backward pass.
CHUNK_LOGITS = 256 * 49_152


# Up to this many tokens per row, the CPU's math attention (matmuls and a softmax) runs forward and
# backward faster than its flash kernel with a padding mask: [8, 9, 105, 64] in bf16 15 ms vs 29 ms;
# from ~150 tokens flash is faster (256: 85 ms vs 50). One thread of a Xeon with AMX.
MATH_ATTENTION_MAX_TOKENS = 128


def attention_backend(input_ids: torch.Tensor | None):
    """The math SDPA backend for short CPU batches, the default choice otherwise. A training step
    holds it over forward and backward alike: gradient checkpointing recomputes the forward in
    the backward pass and needs the same kernel (and so the same saved tensors) both times."""
    if input_ids is None or input_ids.is_cuda or input_ids.shape[-1] > MATH_ATTENTION_MAX_TOKENS:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _gated(act_fn, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return act_fn(gate) * up


def _recomputed(forward):
    def recomputed(*args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)
    return recomputed


def _gated_mlp(mlp):
    """A gated MLP's forward, down(act(gate(x)) * up(x)) as Llama, Gemma and Qwen2 write it, with
    act(gate) * up recomputed in the backward pass from gate and up."""
    def forward(x):
        return mlp.down_proj(_recomputed(_gated)(mlp.act_fn, mlp.gate_proj(x), mlp.up_proj(x)))
    return forward


GATED_MLP_PARTS = ("gate_proj", "up_proj", "down_proj", "act_fn")


@contextmanager
def elementwise_recomputed(model):
    """While this is held (a forward pass with gradients), the elementwise parts of the decoder
    layers are set up to be recomputed in the backward pass instead of kept: every RMSNorm keeps
    only its bf16 input (it computes in fp32 and would keep two or three fp32 copies of the hidden
    states), and a gated MLP keeps gate(x) and up(x), not also act(gate(x)) and their product. For
    Gemma-3-270M at 8 x 384 tokens (4 norms per layer plus per-head q/k norms, 18 layers) the norms
    alone kept 809 MiB of the step's ~2 GiB of saved activations. In fp32 there is no copy to save,
    and a model under whole-layer gradient checkpointing needs none of this: bf16 runs that leave
    gradient_checkpointing unset use it (train.make_trainer). The backward pass recomputes from
    what the forward pass captured, so the forwards are restored on exit and nothing outlives the
    step (the Trainer's model.train() also resets hub-kernel layers' forwards, so the Trainer holds
    this inside compute_loss). Returns how many modules it changed."""
    changed = []
    for module in model.modules():
        if "forward" in vars(module):
            continue
        name = type(module).__name__
        if name.endswith("RMSNorm"):
            module.forward = _recomputed(module.forward)
        elif name.endswith("MLP") and all(hasattr(module, part) for part in GATED_MLP_PARTS):
            module.forward = _gated_mlp(module)
        else:
            continue
        changed.append(module)
    try:
        yield len(changed)
    finally:
        for module in changed:
            del module.forward


def chunk_rows(vocab_size: int) -> int:
    """Label positions per output-layer chunk for a vocabulary of this size."""
    return max(1, CHUNK_LOGITS // max(vocab_size, 1))


def label_position_parts(model):
    """(decoder, output layer) of a model whose loss can be taken at label positions, else None."""
    from peft import PeftModel, PeftType

    if isinstance(model, PeftModel):
        if model.peft_config[model.active_adapter].peft_type not in (PeftType.LORA, PeftType.IA3):
            return None
        model = model.get_base_model()
    # A DDP wrapper has no config, a DeepSpeed engine has its own dict: their forward must run.
    config = getattr(model, "config", None)
    if not hasattr(config, "model_type") or config.model_type not in LABEL_POSITION_TYPES or config.is_encoder_decoder:
        return None
    decoder = getattr(model, model.base_model_prefix, None)
    head = model.get_output_embeddings()
    if decoder is None or head is None:
        return None
    cap = getattr(config, "final_logit_softcapping", None)
    return (decoder, head if cap is None else _soft_capped(head, cap))


def _soft_capped(head, cap: float):
    """Gemma 2/3's output: logits squashed into (-cap, cap) by cap * tanh(logits / cap)."""
    def capped(hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(head(hidden).float() / cap) * cap
    capped.weight = head.weight  # callers read the vocabulary size from it
    return capped


def _summed_loss(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def label_position_loss(decoder, head, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """Next-token cross-entropy summed over label positions in fp32, divided by num_items_in_batch
    (the Trainer's label count over all accumulated micro-batches) or else this batch's count:
    the same value as the model's own loss over full logits."""
    hidden = decoder(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).last_hidden_state
    targets = inputs["labels"][:, 1:]
    keep = targets != -100  # position t predicts token t + 1
    hidden, targets = hidden[:, :-1][keep], targets[keep]
    rows = chunk_rows(head.weight.shape[0])
    if len(targets) <= rows:
        total = _summed_loss(head, hidden, targets)
    else:
        total = sum(checkpoint(_summed_loss, head, h, y, use_reentrant=False)
                    for h, y in zip(hidden.split(rows), targets.split(rows)))
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1)
    return total / count


def trainer_class():
    """transformers.Trainer with compute_loss taken at label positions where that applies."""
    from transformers import Trainer

    class LabelPositionTrainer(Trainer):
        recompute_elementwise = False  # train.make_trainer sets it: elementwise_recomputed on each step

        def training_step(self, model, inputs, num_items_in_batch=None):
            with attention_backend(inputs.get("input_ids")):
                return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            parts = label_position_parts(model)
            if parts is None or return_outputs or "labels" not in inputs or self.label_smoother is not None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # Mirror Trainer.compute_loss: the model divides by num_items_in_batch only when its
            # forward takes loss kwargs; the Trainer then skips its own division by accumulation steps.
            n = num_items_in_batch if self.model_accepts_loss_kwargs else None
            # the decoder is called directly, not via the wrapped forward
            recompute = self.recompute_elementwise and torch.is_grad_enabled()
            with self.accelerator.autocast(), elementwise_recomputed(model) if recompute else nullcontext():
                loss = label_position_loss(*parts, inputs, n)
            if self.args.average_tokens_across_devices and n is not None:
                loss = loss * self.accelerator.num_processes
            return loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            """Validation loss at label positions too: the Trainer's own step asks compute_loss
            for the outputs (full-vocabulary logits at every position), which a loss-only
            evaluation never reads."""
            if not prediction_loss_only or label_position_parts(model) is None or "labels" not in inputs:
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad(), self.compute_loss_context_manager(), attention_backend(inputs["input_ids"]):
                loss = self.compute_loss(model, inputs)
            return loss.detach(), None, None

    return LabelPositionTrainer
