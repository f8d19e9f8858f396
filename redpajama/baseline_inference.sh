#!/bin/sh
# Zero-shot and few-shot prompting of the redpajama base model on both tasks (no fine-tuning).
# Runs redpajama/grids/baselines.yaml through the shared sweep runner into results/redpajama/baselines/<run>/; rerun the
# same command to resume (runs with a results.json are skipped). Works from any directory.
# Usage: redpajama/baseline_inference.sh [--dry-run] [--set data_dir=DATA] [--grid KEY=V1,V2] [--backend ray] [--output_root DIR]
here=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-python}" -m llmhub sweep "$here/grids/baselines.yaml" "$@"
