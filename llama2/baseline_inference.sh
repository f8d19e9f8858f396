#!/bin/sh
# Zero-shot and few-shot prompting of the llama2 base model on both tasks (no fine-tuning).
# Runs llama2/grids/baselines.yaml through the shared sweep runner into results/llama2/baselines/<run>/; rerun the
# same command to resume (runs with a results.json are skipped). Works from any directory.
# Usage: llama2/baseline_inference.sh [--dry-run] [--set data_dir=DATA] [--grid KEY=V1,V2] [--backend ray] [--output_root DIR]
here=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-python}" -m llmhub sweep "$here/grids/baselines.yaml" "$@"
