"""Serve a trained experiment or a model with Ray Serve (the same /predict and /generate as server.py).

  python inference/ray_serve.py --experiment_dir experiments/llama2-summ --num_replicas 2 --port 8000

`--help` lists every flag; the code is llmhub/serve/ray_serve.py.
"""
from llmhub.serve.ray_serve import main

if __name__ == "__main__":
    main()
