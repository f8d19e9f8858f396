#!/usr/bin/env bash
# Serve an experiment or a merged model with vLLM (its CPU build runs on CPU-only machines too).
# Needs vLLM's own virtualenv once: make -C inference/vllm venv   (VLLM_PKG=vllm on GPU machines)
#
#   inference/vllm/launch.sh --experiment_dir experiments/llama2-summ --port 8001
#   inference/vllm/launch.sh --model merged/llama2-summ --port 8001 --dtype float32
set -euo pipefail
exec python "$(dirname "$0")/launch.py" "$@"
