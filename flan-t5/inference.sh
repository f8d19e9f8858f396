#!/usr/bin/env bash
# Evaluate every trained experiment under a folder (default: results/flan-t5) with
# `python -m llmhub evaluate`, writing predictions.jsonl and results.json into each.
# Experiments that already hold a results.json are skipped unless --force is given first.
# Usage: flan-t5/inference.sh [--force] [FOLDER] [evaluate flags, e.g. --data_dir DATA --test_samples 100]
here=$(cd "$(dirname "$0")" && pwd)
force=0; [ "$1" = "--force" ] && { force=1; shift; }
root=${1:-$here/../results/flan-t5}; [ $# -gt 0 ] && shift
status=0
while IFS= read -r model_dir; do  # every experiment folder that holds a trained model/
  dir=$(dirname "$model_dir")
  if [ -f "$dir/results.json" ] && [ "$force" = 0 ]; then echo "skip $dir (evaluated; --force re-evaluates)"; continue; fi
  echo "evaluate $dir"
  "${PYTHON:-python}" -m llmhub evaluate "$dir" "$@" || status=1  # one failure does not stop the others
done < <(find "$root" -type d -name model -exec test -f {}/../config.yaml \; -print | sort)
exit $status
