"""Start vLLM's OpenAI server (from its own virtualenv) on an experiment, a merged folder or a model.

  make -C inference/vllm venv      # once: inference/vllm/.venv
  python inference/vllm/launch.py --experiment_dir experiments/llama2-summ --port 8001

`--help` lists every flag; the code is llmhub/serve/vllm_server.py.
"""
from llmhub.serve.vllm_server import main

if __name__ == "__main__":
    main()
