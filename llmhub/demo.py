"""The README's first command: LoRA on the embedded SmolLM2-135M, zero-shot vs fine-tuned ROUGE."""
from __future__ import annotations

from pathlib import Path

from .config import RunConfig, apply_overrides
from .recipes import defaults


def demo(args) -> None:
    from .baseline import run_baseline
    from .experiment import train_experiment
    from .results import read_results

    out = Path(args.output_dir)
    over = {"pretrained_ckpt": "smollm2-135m", "method": "lora", "data_dir": args.data_dir,
            "train_samples": args.train_samples, "test_samples": args.test_samples,
            "epochs": args.epochs, "batch_size": 8, "grad_accum": 1, "learning_rate": 5e-4,
            "max_source_length": 384, "max_target_length": 64, "save_steps": 20, "eval_batch_size": 16,
            # A training step of 8 x 448 tokens peaks at 6.3 GB resident without and 2.9 GB with
            # gradient checkpointing, for 12 % more time per step (bench_qlora_memory.py children).
            "gradient_checkpointing": True,
            # The loss of the saved model on 100 SAMSum validation dialogues goes into results.json.
            "validation_samples": 100}
    cfg = apply_overrides(apply_overrides(RunConfig(), defaults("llama2", "summarization")), over)
    table = {}
    zs_dir = out / "zero-shot"
    if not (zs_dir / "results.json").exists():
        print("zero-shot evaluation of the base model")
        run_baseline(apply_overrides(cfg, {"output_dir": str(zs_dir)}), "zero-shot")
    table["SmolLM2-135M zero-shot"] = read_results(zs_dir / "results.json")
    ft_dir = out / "lora"
    if not (ft_dir / "results.json").exists():
        print(f"LoRA fine-tuning on {args.train_samples} SAMSum dialogues")
        train_experiment(apply_overrides(cfg, {"output_dir": str(ft_dir)}), resume=True)
    table["SmolLM2-135M + LoRA"] = read_results(ft_dir / "results.json")
    print(f"\nSAMSum test, first {args.test_samples} dialogues (ROUGE F1, %)\n")
    print("| model | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | train time (s) |")
    print("|---|---|---|---|---|---|")
    for name, rec in table.items():
        m = rec["metrics"]
        secs = (rec.get("train") or {}).get("seconds")
        cells = [f"{m[k]:.2f}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")]
        print(f"| {name} | {' | '.join(cells)} | {f'{secs:.0f}' if secs else '-'} |")
    print(f"\nresults: {out}/*/results.json")
