"""Serve a trained experiment or a model over HTTP (/predict, /generate, OpenAI's /v1).

  python inference/server.py --experiment_dir experiments/llama2-summ --mode batched --port 8000

`--help` lists every flag; the code is llmhub/serve/server.py (same as `python -m llmhub.serve.server`).
"""
from llmhub.serve.server import main

if __name__ == "__main__":
    main()
