#!/usr/bin/env bash
# Serve a merged model (inference/merge.py) with Hugging Face Text Generation Inference.
# Needs Docker, the NVIDIA container toolkit and a GPU: it cannot run on the project's CPU machines.
#
#   TGI_IMAGE=<text-generation-inference image:tag> inference/tgi/launch.sh merged/llama2-summ 8080
#
# TGI_IMAGE names the TGI container image you pull from your registry (see the TGI docs for the
# current tag). Then: POST http://127.0.0.1:8080/generate {"inputs": ..., "parameters": {...}}.
set -euo pipefail
MODEL_DIR=${1:?usage: launch.sh MERGED_MODEL_DIR [PORT]}
PORT=${2:-8080}
IMAGE=${TGI_IMAGE:?set TGI_IMAGE to the text-generation-inference image to run}
[ -f "$MODEL_DIR/config.json" ] || { echo "error: $MODEL_DIR has no config.json; run inference/merge.py first" >&2; exit 2; }
MODEL_DIR=$(cd "$MODEL_DIR" && pwd)
# Token budgets per request: ~100-token prompts plus 50 new tokens fit well inside these.
exec docker run --rm --gpus all --shm-size 1g -p "127.0.0.1:$PORT:80" -v "$MODEL_DIR:/model:ro" "$IMAGE" \
  --model-id /model --max-input-tokens "${MAX_INPUT_TOKENS:-1024}" --max-total-tokens "${MAX_TOTAL_TOKENS:-1536}" \
  --max-batch-prefill-tokens "${MAX_BATCH_PREFILL_TOKENS:-4096}"
