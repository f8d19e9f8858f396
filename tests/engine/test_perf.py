"""Precision and compute choices: dtype selection, fp32 adapters under a bf16 base, the loss at
label positions equal to the full loss, gradient checkpointing with unchanged gradients."""
from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import Trainer

from llmhub import lm_loss, methods, models
from llmhub.data import load_split
from llmhub.generate import generate
from llmhub.train import collator, make_trainer, tokenize_rows
from test_experiments import tiny_config


def test_auto_dtype_is_bf16_only_where_supported_and_faster(monkeypatch):
    assert models.resolve_dtype("auto", cuda=True, cpu_bf16=False) == torch.bfloat16
    assert models.resolve_dtype("auto", cuda=False, cpu_bf16=True) == torch.bfloat16
    assert models.resolve_dtype("auto", cuda=False, cpu_bf16=False) == torch.float32
    assert models.resolve_dtype("float32", cuda=False, cpu_bf16=True) == torch.float32  # override
    assert models.resolve_dtype("bfloat16", cuda=False, cpu_bf16=False) == torch.bfloat16
    amx, avx512_bf16 = "flags\t: fpu avx512f avx512_vnni amx_bf16 amx_tile", "flags\t: fpu avx512f avx512_bf16"
    assert models.cpu_supports_bf16(amx) and models.cpu_supports_bf16(avx512_bf16)
    assert not models.cpu_supports_bf16("flags\t: fpu avx512f avx512bw avx512_vnni")  # no native bf16
    assert not models.cpu_prefers_bf16("flags\t: fpu avx512f avx512bw avx512_vnni")

    # the real probe: one measurement per process, a ratio of two timings
    speedup = models.bf16_matmul_speedup()
    assert 0 < speedup < float("inf") and models.bf16_matmul_speedup() is speedup
    flags = models._cpu_flags(None)
    native_and_faster = "amx_bf16" in flags or (models.cpu_supports_bf16() and speedup >= models.BF16_MIN_SPEEDUP)
    expected = torch.bfloat16 if native_and_faster or torch.cuda.is_available() else torch.float32
    assert models.resolve_dtype("auto") == expected

    # the decision for what the probe reads on other CPUs (bench_mfu's peaks: AMD EPYC 2.2, a Xeon
    # without AMX 0.64); AMX needs no probe
    for measured, bf16 in ((2.2, True), (0.64, False)):
        monkeypatch.setattr(models, "bf16_matmul_speedup", lambda: measured)
        assert models.cpu_prefers_bf16(avx512_bf16) is bf16
    monkeypatch.setattr(models, "bf16_matmul_speedup", lambda: pytest.fail("AMX needs no probe"))
    assert models.cpu_prefers_bf16(amx)


def _setup(tiny_models, data_dir, tmp_path, method="lora", dtype=torch.float32, family="llama", **extra):
    extra.setdefault("torch_dtype", "float32" if dtype == torch.float32 else "bfloat16")  # not `auto`
    cfg = tiny_config(tiny_models[family], data_dir, tmp_path / "exp", "summarization", method,
                      lora_dropout=0.0, **extra)
    path = str(tiny_models[family])
    tok = models.load_tokenizer(path, "causal")
    torch.manual_seed(0)
    model = models.load_base_model(path, "causal", dtype, quantize_4bit=method == "qlora")
    model = methods.wrap(model, cfg.method, "causal")
    rows = load_split(cfg.data, "train")[:8]
    features = tokenize_rows(rows, tok, "causal", "causal", "generation", cfg.data)
    return cfg, tok, model, features, collator(tok, "causal")(features)


def test_adapters_and_optimizer_state_stay_fp32_under_a_bf16_base(tiny_models, data_dir, tmp_path):
    cfg, tok, model, features, _ = _setup(tiny_models, data_dir, tmp_path, dtype=torch.bfloat16,
                                          torch_dtype="bfloat16", max_steps=2)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())
    assert model.get_base_model().model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    seen = []
    hook = next(m for n, m in model.named_modules() if n.endswith("lora_A.default")).register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))
    before = {n: p.detach().clone() for n, p in lora.items()}
    trainer = make_trainer(model, tok, features, "causal", cfg, tmp_path / "ckpt")
    assert trainer.args.bf16
    trainer.train()
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # the fp32 adapter ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in lora.values())
    assert any(not torch.equal(before[n], p) for n, p in lora.items())
    states = [s for s in trainer.optimizer.state.values() if s]
    assert states and all(s["exp_avg"].dtype == torch.float32 for s in states)


def test_qlora_under_a_bf16_base_keeps_frozen_weights_bf16_and_trains(tiny_models, data_dir, tmp_path):
    # peft's prepare_model_for_kbit_training would upcast them to fp32 (2x their memory, plus the
    # bf16 cast autocast makes of the output layer); the adapters and their optimizer state stay fp32.
    cfg, tok, model, features, _ = _setup(tiny_models, data_dir, tmp_path, "qlora", dtype=torch.bfloat16,
                                          max_steps=2)
    base = model.get_base_model()
    assert type(base.model.layers[0].mlp.up_proj.weight).__name__ == "Params4bit"
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad and p.dtype != torch.uint8}
    assert frozen and {p.dtype for p in frozen.values()} == {torch.bfloat16}
    assert base.model.embed_tokens.weight.dtype == torch.bfloat16 and base.model.norm.weight.dtype == torch.bfloat16
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n and p.dtype == torch.float32 for n, p in lora.items())
    before = {n: p.detach().clone() for n, p in lora.items()}
    trainer = make_trainer(model, tok, features, "causal", cfg, tmp_path / "ckpt")
    assert trainer.args.bf16 and trainer.args.activation_checkpointing
    result = trainer.train()
    assert result.training_loss > 0 and any(not torch.equal(before[n], p) for n, p in lora.items())
    assert all(p.dtype == torch.bfloat16 for p in frozen.values())


@pytest.mark.parametrize("family,method", [("llama", "full"), ("llama", "lora"), ("llama", "ia3"),
                                           ("falcon", "lora"), ("gpt_neox", "lora"), ("gemma3", "lora"),
                                           ("gemma3", "full"), ("qwen2", "lora")])
def test_label_position_loss_equals_the_full_loss(tiny_models, data_dir, tmp_path, monkeypatch, family, method):
    cfg, tok, model, features, batch = _setup(tiny_models, data_dir, tmp_path, method, family=family)
    parts = lm_loss.label_position_parts(model)
    assert parts is not None
    model.train()
    full = model(**batch).loss
    full_grads = torch.autograd.grad(full, [p for p in model.parameters() if p.requires_grad])
    vocab = model.get_output_embeddings().weight.shape[0]
    for chunk in (lm_loss.CHUNK_LOGITS, 5 * vocab):  # one chunk, and many checkpointed chunks of 5 rows
        monkeypatch.setattr(lm_loss, "CHUNK_LOGITS", chunk)
        ours = lm_loss.label_position_loss(*parts, batch)
        assert abs(ours.item() - full.item()) < 1e-5
        grads = torch.autograd.grad(ours, [p for p in model.parameters() if p.requires_grad])
        assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(grads, full_grads))
    # Through the Trainer, with the label count of an accumulated batch: same value as its own loss.
    trainer = make_trainer(model, tok, features, "causal", cfg, tmp_path / "ckpt")
    n = (batch["labels"] != -100).sum() * 2
    ours = trainer.compute_loss(model, dict(batch), num_items_in_batch=n)
    theirs = Trainer.compute_loss(trainer, model, dict(batch), num_items_in_batch=n)
    assert abs(ours.item() - theirs.item()) < 1e-5


@pytest.mark.parametrize("family", ["llama", "falcon"])
def test_generation_gives_the_output_layer_contiguous_rows(tiny_models, data_dir, tmp_path, family):
    """A prompt's last-position slice reaches the output layer as contiguous rows (oneDNN's bf16
    product with frozen weights is slow and memory-hungry on the strided view, models._contiguous_input)."""
    _, tok, model, _, _ = _setup(tiny_models, data_dir, tmp_path, dtype=torch.bfloat16, family=family)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda m, args, out: seen.append(args[0].is_contiguous()))
    generate(model, tok, ["a longer first prompt of several words", "short"], "causal", 3, progress=False)
    hook.remove()
    assert seen and all(seen)


@pytest.mark.parametrize("family,method", [("llama", "prefix"), ("llama", "prompt"), ("t5", "lora")])
def test_methods_that_move_positions_take_the_standard_loss(tiny_models, data_dir, tmp_path, family, method):
    cfg = tiny_config(tiny_models[family], data_dir, tmp_path, "summarization", method)
    fam = "seq2seq" if family == "t5" else "causal"
    model = methods.wrap(models.load_base_model(str(tiny_models[family]), fam, torch.float32), cfg.method, fam)
    assert lm_loss.label_position_parts(model) is None


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_models, data_dir, tmp_path, method):
    grads = {}
    for on in (False, True):
        cfg, tok, model, features, batch = _setup(tiny_models, data_dir, tmp_path, method,
                                                  gradient_checkpointing=on)
        trainer = make_trainer(model, tok, features, "causal", cfg, tmp_path / "ckpt")
        assert trainer.args.activation_checkpointing is on
        assert model.get_base_model().model.gradient_checkpointing is on
        model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by the training loop
        trainer.training_step(model, dict(batch))  # forward and backward, as in training
        grads[on] = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(grads[False], grads[True]))


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_a_bf16_step_recomputes_norms_and_mlp_products(tiny_models, data_dir, tmp_path, monkeypatch, family):
    """A bf16 step without whole-layer checkpointing recomputes every RMSNorm and gated-MLP product
    in the backward pass (lm_loss.elementwise_recomputed, held by the Trainer's compute_loss): fewer
    bytes kept for the backward pass, the same gradients, and the modules' own forwards back after
    the step."""
    cfg, tok, model, features, batch = _setup(tiny_models, data_dir, tmp_path, dtype=torch.bfloat16, family=family)
    trainer = make_trainer(model, tok, features, "causal", cfg, tmp_path / "ckpt")
    assert trainer.args.bf16 and not trainer.args.activation_checkpointing and trainer.recompute_elementwise
    cfg.train.gradient_checkpointing = False  # `false`: nothing recomputed
    assert not make_trainer(model, tok, features, "causal", cfg, tmp_path / "off").recompute_elementwise
    trainer.current_gradient_accumulation_steps = 1
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    mlps = [m for m in model.modules() if type(m).__name__.endswith("MLP")]
    parts = lm_loss.label_position_parts(model)
    model.train()

    def saved_bytes(recompute: bool) -> int:
        """Bytes the forward pass keeps for the backward pass (each storage once)."""
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                lm_loss.elementwise_recomputed(model) if recompute else contextlib.nullcontext(), \
                torch.autocast("cpu", dtype=torch.bfloat16):
            lm_loss.label_position_loss(*parts, batch)
        return sum(storages.values())

    assert saved_bytes(True) < saved_bytes(False)
    with lm_loss.elementwise_recomputed(model) as count:
        assert count == len(norms) + len(mlps) and norms and mlps
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads, used, real = {}, [], lm_loss.elementwise_recomputed
    for recompute in (True, False):  # the Trainer's step (forward and backward) with and without
        monkeypatch.setattr(lm_loss, "elementwise_recomputed",
                            lambda model: used.append(recompute) or (real if recompute else contextlib.nullcontext)(model))
        trainer.training_step(model, dict(batch))
        grads[recompute] = [p.grad.clone() for p in trainable]
        model.zero_grad(set_to_none=True)
    assert used == [True, False]
    assert all(torch.equal(a, b) for a, b in zip(grads[True], grads[False]))  # the same arithmetic
    assert all("forward" not in vars(m) for m in norms + mlps)  # nothing outlives the step


def test_gradient_checkpointing_is_on_by_default_for_qlora_only(tiny_models, data_dir, tmp_path):
    for method, expected in (("qlora", True), ("lora", False)):
        cfg, tok, model, features, _ = _setup(tiny_models, data_dir, tmp_path, method)
        assert cfg.train.gradient_checkpointing is None
        assert make_trainer(model, tok, features, "causal", cfg, tmp_path / "c").args.activation_checkpointing is expected


@pytest.mark.parametrize("family,method", [("llama", m) for m in ("lora", "prefix", "prompt", "ia3", "full")]
                         + [("t5", "lora"), ("t5", "prefix")])
def test_every_method_trains_and_evaluates_under_bf16(tiny_models, data_dir, tmp_path, family, method):
    from llmhub.experiment import train_experiment

    cfg = tiny_config(tiny_models[family], data_dir, tmp_path / "exp", "summarization", method,
                      torch_dtype="bfloat16")
    record = train_experiment(cfg)
    assert record["train"]["steps"] == 3 and record["train"]["train_loss"] > 0
    assert 0 <= record["metrics"]["rouge1"] <= 100


def test_short_cpu_batches_take_the_math_attention_and_the_same_loss(tiny_models, data_dir, tmp_path):
    from torch.backends.cuda import flash_sdp_enabled

    short = torch.zeros(8, lm_loss.MATH_ATTENTION_MAX_TOKENS, dtype=torch.long)
    with lm_loss.attention_backend(short):
        assert not flash_sdp_enabled()
    with lm_loss.attention_backend(torch.zeros(8, lm_loss.MATH_ATTENTION_MAX_TOKENS + 1, dtype=torch.long)):
        assert flash_sdp_enabled()
    cfg, tok, model, features, batch = _setup(tiny_models, data_dir, tmp_path)
    assert batch["input_ids"].shape[1] <= lm_loss.MATH_ATTENTION_MAX_TOKENS
    model.eval()
    with lm_loss.attention_backend(batch["input_ids"]):
        math = model(**batch).loss
    assert abs(math.item() - model(**batch).loss.item()) < 1e-5
