#!/bin/sh
# LoRA (QLoRA recipe) ablation of falcon: rank x dropout on both tasks.
# Runs falcon/grids/lora_ablation.yaml through the shared sweep runner into results/falcon/lora_ablation/<run>/; rerun the
# same command to resume (runs with a results.json are skipped). Works from any directory.
# Usage: falcon/run_lora.sh [--dry-run] [--set data_dir=DATA] [--grid KEY=V1,V2] [--backend ray] [--output_root DIR]
here=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-python}" -m llmhub sweep "$here/grids/lora_ablation.yaml" "$@"
