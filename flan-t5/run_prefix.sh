#!/bin/sh
# Prefix-tuning ablation of Flan-T5: virtual tokens 10/50/100 x projection off/on x dropout x epochs.
# Runs flan-t5/grids/prefix_ablation.yaml through the shared sweep runner into results/flan-t5/prefix_ablation/<run>/; rerun the
# same command to resume (runs with a results.json are skipped). Works from any directory.
# Usage: flan-t5/run_prefix.sh [--dry-run] [--set data_dir=DATA] [--grid KEY=V1,V2] [--backend ray] [--output_root DIR]
here=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-python}" -m llmhub sweep "$here/grids/prefix_ablation.yaml" "$@"
