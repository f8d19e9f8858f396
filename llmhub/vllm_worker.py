"""Greedy completions of token-id prompts with vLLM's offline engine; run by vLLM's own python,
never imported by llmhub (llmhub/vllm_eval.py writes the request and reads the answer).

  python vllm_worker.py REQUEST.json OUTPUT.json

REQUEST: {"model", "prompts": [[id, ...], ...], "max_tokens", "dtype", "max_model_len", "progress"}
OUTPUT:  {"tokens": [[new id, ...], ...] in prompt order, "startup_seconds", "generate_seconds"},
         written whole (renamed into place) only when every prompt is done.
"""
import json
import os
import sys
import time


def main() -> None:
    start = time.perf_counter()
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    request_file, output_file = sys.argv[1:3]
    with open(request_file) as f:
        req = json.load(f)
    # eager and in one process: on a small CPU, compiling and spawning cost more start-up time than
    # they save on one evaluation (llmhub/vllm_eval.py has the figures)
    llm = LLM(model=req["model"], dtype=req["dtype"], max_model_len=req["max_model_len"], seed=0,
              enforce_eager=True, distributed_executor_backend="uni")
    ready = time.perf_counter()
    outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in req["prompts"]],
                           SamplingParams(temperature=0, max_tokens=req["max_tokens"], detokenize=False),
                           use_tqdm=req["progress"])
    answer = {"tokens": [list(o.outputs[0].token_ids) for o in outputs], "startup_seconds": ready - start,
              "generate_seconds": time.perf_counter() - ready}
    with open(output_file + ".part", "w") as f:
        json.dump(answer, f)
    os.replace(output_file + ".part", output_file)


if __name__ == "__main__":
    main()
