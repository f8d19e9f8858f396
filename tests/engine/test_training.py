"""Training behaviour: seeds, QLoRA for real, resume after an interruption, script/CLI parity."""
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmhub.experiment import load_for_training, prepare, train_experiment
from llmhub.train import last_complete_checkpoint
from test_experiments import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def adapter_weights(out: Path) -> dict:
    return load_file(out / "model" / "adapter_model.safetensors")


def test_same_seed_same_adapter_and_metrics(tiny_models, data_dir, tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        cfg = tiny_config(tiny_models["llama"], data_dir, tmp_path / name, "summarization", "lora", seed=seed)
        runs[name] = train_experiment(cfg)
    wa, wb, wc = (adapter_weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert runs["a"]["metrics"] == runs["b"]["metrics"]
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def check_qlora_base_is_4bit(model_dir: str, data_dir: str, out: str) -> None:
    from bitsandbytes.nn import Linear4bit

    cfg = tiny_config(Path(model_dir), Path(data_dir), Path(out), "classification", "qlora")
    tok, model = load_for_training(prepare(cfg))
    kinds = {type(m).__name__ for m in model.modules()}
    assert any(isinstance(m, Linear4bit) for m in model.modules()), kinds
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q.base_layer, Linear4bit) and q.base_layer.weight.quant_type == "nf4"
    # the fp32 checkpoint was read to quantise; no tensor may keep its memory mapping (and pages) alive
    gc.collect()
    if Path("/proc/self/maps").exists():
        assert str(Path(model_dir).resolve()) not in Path("/proc/self/maps").read_text()


def test_qlora_base_is_4bit(tiny_models, data_dir, tmp_path):
    # A fresh process: /proc/self/maps is process-wide, and models other tests loaded from the same
    # tiny checkpoint may still be mapped in the test process.
    args = ", ".join(repr(str(a)) for a in (tiny_models["llama"], data_dir, tmp_path / "q"))
    proc = subprocess.run([sys.executable, "-c", f"import test_training as t; t.check_qlora_base_is_4bit({args})"],
                          cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_resume_skips_half_written_checkpoints(tmp_path):
    """A kill during a save leaves a newer folder without (or with a cut) trainer_state.json."""
    for step, state in ((5, '{"global_step": 5}'), (10, '{"global_step": 10}'), (12, '{"global_st'), (15, None)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_resume_after_kill(tiny_models, data_dir, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "llmhub", "train", "--pretrained_ckpt", str(tiny_models["llama"]),
            "--data_dir", str(data_dir), "--task", "summarization", "--train_samples", "16", "--test_samples", "2",
            "--max_steps", "40", "--save_steps", "5", "--batch_size", "4", "--max_new_tokens", "4",
            "--output_dir", str(out)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # save_total_limit rotates old checkpoints away, so wait for any checkpoint at step >= 10 (of 40,
    # each saving every 5 steps: seconds apart, and the poll is every 50 ms)
    saved = lambda: [p for p in (out / "checkpoints").glob("checkpoint-*")  # noqa: E731
                     if int(p.name.rsplit("-", 1)[1]) >= 10 and (p / "trainer_state.json").is_file()]
    while time.time() < deadline and not saved():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert saved(), "no checkpoint appeared"
    assert not (out / "results.json").exists()
    done = subprocess.run(args + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["steps"] == 40
    assert 10 <= int(results["train"]["resumed_from"].rsplit("-", 1)[1]) < 40


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="no /proc/self/clear_refs (not Linux)")
def test_peak_memory_is_per_run_not_per_process():
    """A sweep trains many runs in one process: each run's peak starts from a reset, so an earlier,
    bigger run does not show up in a later run's peak_memory_mb."""
    from llmhub.results import peak_memory_mb, release_heap, reset_peak_memory

    big = torch.ones(96 * 2**20)  # 384 MiB, touched
    assert big.sum().item() > 0
    peak_with_big = peak_memory_mb()
    del big
    release_heap()
    reset_peak_memory()
    assert peak_memory_mb() < peak_with_big - 256


def test_results_name_the_cpu_as_lscpu_does():
    import shutil
    import subprocess

    from llmhub.results import hardware

    hw = hardware()
    if shutil.which("lscpu") is None:
        pytest.skip("no lscpu on this machine")
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    name = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    assert hw["cpu_model"] == name
    assert hw["cpu_bf16_flags"] == [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in lscpu]
