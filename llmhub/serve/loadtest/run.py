"""Load-test any of the servers with real test inputs and summarise the sweep with cost per token.

  # 1. targets: ~100-token SAMSum test dialogues as request bodies for a server type
  python inference/load_testing/run.py targets --server fastapi --url http://127.0.0.1:8000 \\
      --data_dir ../shared/data --task summarization --tokenizer smollm2-135m --max_new_tokens 50 \\
      --out results/serving/targets/fastapi.jsonl
  # 2. sweep: vegeta attack | vegeta report -type=json per rate (built-in attacker without vegeta)
  python inference/load_testing/run.py attack --server fastapi --targets results/serving/targets/fastapi.jsonl \\
      --rates 0.5,1,2 --duration 20 --label fastapi-batched --out results/serving/fastapi-batched \\
      --tokenizer smollm2-135m --cost_per_hour 1.624
  # streamed OpenAI requests (our /v1, vLLM, ...): also TTFT, inter-token latency, tokens/s, goodput
  python inference/load_testing/run.py targets --server openai --model_name llama2-summ --url http://127.0.0.1:8000 ...
  python inference/load_testing/run.py attack --server openai ... --slo_ttft 1 --slo_itl 0.2
  # 3. CSV + plot of one or more sweeps
  python inference/load_testing/run.py summarize results/serving/fastapi-* --csv results/serving/sweep.csv \\
      --plot assets/serving_sweep.png

Send load only to servers you run yourself. See inference/README.md.
"""
from __future__ import annotations

import argparse

from ...errors import HubError, run


def _rates(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"rates must be comma-separated numbers, got {text!r}") from None


def _tokenizer(name: str | None):
    if not name:
        return None
    from ... import models

    try:
        return models.load_tokenizer(models.resolve_path(name), "causal")
    except (OSError, ValueError) as e:
        raise HubError(f"cannot load tokenizer '{name}': {str(e).splitlines()[0][:160]}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("targets", help="write a Vegeta targets file of real ~100-token test inputs")
    t.add_argument("--server", required=True, help="fastapi | ray | tgi | vllm | openai (streamed /v1/completions)")
    t.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
    t.add_argument("--data_dir", default="data", help="data folder (samsum/, newsgroups/ test splits)")
    t.add_argument("--task", default="summarization", help="summarization | dialogsum | classification")
    t.add_argument("--tokenizer", required=True, help="tokenizer of the served model (folder or registry name)")
    t.add_argument("--style", default="causal", help="template for tgi/vllm prompts: causal | t5 | plain")
    t.add_argument("--n", type=int, default=100, help="distinct request bodies (default: %(default)s)")
    t.add_argument("--input_tokens", type=int, default=100, help="tokens per input (default: %(default)s)")
    t.add_argument("--max_new_tokens", type=int, default=None, help="tokens to generate per request")
    t.add_argument("--model_name", default="model", help="vllm, openai: the served model name")
    t.add_argument("--out", required=True, help="targets file to write")
    a = sub.add_parser("attack", help="sweep request rates against a server")
    a.add_argument("--server", required=True, help="fastapi | ray | tgi | vllm | openai (how to read answers)")
    a.add_argument("--targets", required=True, help="a targets file from the `targets` command")
    a.add_argument("--rates", required=True, type=_rates, help="offered requests per second, e.g. 1,2,4")
    a.add_argument("--duration", type=float, default=20, help="seconds per rate (default: %(default)s)")
    a.add_argument("--timeout", type=float, default=30, help="per-request timeout, s (default: %(default)s)")
    a.add_argument("--label", required=True, help="name of this server/mode in tables and plots")
    a.add_argument("--out", required=True, help="folder for rate_*.json and rate_*.results.jsonl")
    a.add_argument("--tokenizer", help="count response tokens with it (needed for cost per token)")
    a.add_argument("--cost_per_hour", type=float, default=1.624,
                   help="instance USD/hour (default: %(default)s, AWS g5.4xlarge as in the seeds)")
    a.add_argument("--p90_bound", type=float, default=float("inf"), help="a run passes with p90 <= this, s")
    a.add_argument("--min_success", type=float, default=0.99, help="a run passes with success >= this")
    a.add_argument("--min_kept_up", type=float, default=0.0,
                   help="a run passes when the server answered >= this share of the offered rate while requests "
                        "arrived (the `kept_up` column; 0.9 rejects a growing backlog a short run's p90 hides)")
    for slo, latency in (("slo_ttft", "time to first token"), ("slo_itl", "mean inter-token latency")):
        a.add_argument(f"--{slo}", type=float, default=float("inf"),
                       help=f"openai: goodput counts requests with {latency} <= this, s")
    a.add_argument("--stop_after_fail", action="store_true", help="end the sweep at the first failing rate")
    s = sub.add_parser("summarize", help="CSV and plot of one or more sweep folders")
    s.add_argument("sweeps", nargs="+", help="sweep folders written by `attack`")
    s.add_argument("--csv", required=True, help="CSV to write")
    s.add_argument("--plot", help="PNG to write (p90 latency and throughput vs RPS)")
    s.add_argument("--title", default="")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go():
        from . import charts, rates, targets

        if args.command == "targets":
            targets.check_server(args.server)
            if args.n < 1 or args.input_tokens < 1:
                raise HubError("--n and --input_tokens must be >= 1")
            tok = _tokenizer(args.tokenizer)
            raws = targets.pick_inputs(args.data_dir, args.task, tok, args.n, args.input_tokens)
            prompts = targets.render(tok, args.style, args.task, raws)
            path = targets.write_targets(args.out, args.server, args.url, raws, prompts, tok,
                                         args.max_new_tokens, args.model_name)
            print(f"{len(raws)} targets -> {path}")
        elif args.command == "attack":
            targets.check_server(args.server)
            rates.check_rates(args.rates)
            if not 0 <= args.min_kept_up <= 1:
                raise HubError(f"--min_kept_up must be between 0 and 1 (a share of the offered rate), got {args.min_kept_up:g}")
            if not (args.slo_ttft > 0 and args.slo_itl > 0):
                raise HubError(f"--slo_ttft and --slo_itl must be > 0 seconds, got {args.slo_ttft:g} and {args.slo_itl:g}")
            loaded = targets.read_targets(args.targets)
            rates.check_reachable("/".join(loaded[0]["url"].split("/")[:3]))  # scheme://host:port
            rows = rates.sweep(args.targets, args.rates, args.duration, args.out, args.server, args.label,
                               _tokenizer(args.tokenizer), args.cost_per_hour, args.timeout,
                               args.stop_after_fail, args.min_success, args.p90_bound, args.min_kept_up,
                               slo_ttft=args.slo_ttft, slo_itl=args.slo_itl)
            best = charts.sustained(rows, args.label)
            print(f"sustained: {best['offered_rps']:g} rps" if best else "sustained: no rate passed")
        else:
            rows = charts.read_rows(args.sweeps)
            print(f"{len(rows)} rows -> {charts.write_csv(rows, args.csv)}")
            if args.plot:
                print(f"plot -> {charts.plot(rows, args.plot, args.title)}")

    run(go)


if __name__ == "__main__":
    main()
