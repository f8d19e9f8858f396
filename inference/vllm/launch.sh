#!/usr/bin/env bash
# Serve a merged model (inference/merge.py) with vLLM's OpenAI-compatible server.
# Needs `pip install vllm` on a machine with a GPU: it cannot run on the project's CPU machines.
#
#   inference/vllm/launch.sh merged/llama2-summ 8000
#
# Then: POST http://127.0.0.1:8000/v1/completions {"model": "llmhub", "prompt": ..., "max_tokens": 50}
set -euo pipefail
MODEL_DIR=${1:?usage: launch.sh MERGED_MODEL_DIR [PORT]}
PORT=${2:-8000}
[ -f "$MODEL_DIR/config.json" ] || { echo "error: $MODEL_DIR has no config.json; run inference/merge.py first" >&2; exit 2; }
command -v vllm >/dev/null || { echo "error: vllm is not installed (pip install vllm, GPU machine)" >&2; exit 2; }
exec vllm serve "$MODEL_DIR" --host 127.0.0.1 --port "$PORT" --served-model-name llmhub \
  --max-model-len "${MAX_MODEL_LEN:-2048}" --dtype auto
