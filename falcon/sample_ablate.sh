#!/bin/sh
# Sample efficiency of falcon + QLoRA on 20 Newsgroups: 266 ... 10664 training posts.
# Runs falcon/grids/sample_efficiency.yaml through the shared sweep runner into results/falcon/sample_efficiency/<run>/; rerun the
# same command to resume (runs with a results.json are skipped). Works from any directory.
# Usage: falcon/sample_ablate.sh [--dry-run] [--set data_dir=DATA] [--grid KEY=V1,V2] [--backend ray] [--output_root DIR]
here=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-python}" -m llmhub sweep "$here/grids/sample_efficiency.yaml" "$@"
