#!/bin/sh
# LoRA ablation of Flan-T5: rank 2/4/8/16 x dropout 0.1/0.2 x epochs 2/5/10, both tasks.
# Runs flan-t5/grids/lora_ablation.yaml through the shared sweep runner into results/flan-t5/lora_ablation/<run>/; rerun the
# same command to resume (runs with a results.json are skipped). Works from any directory.
# Usage: flan-t5/run_lora.sh [--dry-run] [--set data_dir=DATA] [--grid KEY=V1,V2] [--backend ray] [--output_root DIR]
here=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-python}" -m llmhub sweep "$here/grids/lora_ablation.yaml" "$@"
