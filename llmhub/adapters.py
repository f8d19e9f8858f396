"""Fold a trained adapter into its base model and save a standalone model folder for TGI / vLLM.

  python inference/merge.py --experiment_dir experiments/llama2-summ --output_dir merged/llama2-summ

Works for seq2seq, causal and encoder experiments trained with LoRA, QLoRA or IA3 (prompt-learning
adapters such as prefix / prompt tuning have no weights to fold in: serve those with
inference/server.py). A QLoRA adapter is merged into the base loaded in full precision, since a
4-bit base cannot hold the merged weights.

Before anything is kept, the saved folder is loaded back and its logits are compared with base +
adapter on a few prompts rendered with the experiment's own template, all in fp32; a difference beyond the
tolerance removes the folder and exits non-zero. The folder also holds the tokenizer,
labels.json (classifiers), llmhub.yaml (the experiment's config, so inference/server.py --model
serves it with the right template) and merge.json (what was checked).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .errors import HubError

MERGED_CONFIG = "llmhub.yaml"  # the experiment config saved beside a merged model
PROMPT_LEARNING = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "ADAPTION_PROMPT"}
# Inputs for the check: short, varied, in the shape of both tasks' data.
CHECK_TEXTS = [
    "Anna: are you coming to the party tonight?\nBen: yes, see you at 8",
    "The shuttle launch was moved to Friday because of the weather over the launch site.",
    "Cleo: did you pass the exam?\nDan: I did! Let's celebrate\nCleo: pizza at 7?",
]


@torch.inference_mode()
def logits_of(model, tok, family: str, prompts: list[str], max_length: int):
    """Logits of each prompt (seq2seq: of a fixed 4-token decoder prefix), one prompt at a time so
    padding plays no part in the comparison."""
    out = []
    for text in prompts:
        enc = tok(text, return_tensors="pt", truncation=True, max_length=max_length)
        if family == "seq2seq":
            start = model.config.decoder_start_token_id or 0
            dec = torch.tensor([[start] + tok("the summary", add_special_tokens=False)["input_ids"][:3]])
            out.append(model(**enc, decoder_input_ids=dec).logits.float())
        else:
            out.append(model(**enc).logits.float())
    return out


def compare(before, after, atol: float, rtol: float) -> float:
    """Largest |before - after|; raises HubError when any element is outside atol + rtol * |before|."""
    worst = max(float((a - b).abs().max()) for a, b in zip(before, after))
    if not all(torch.allclose(b, a, atol=atol, rtol=rtol) for a, b in zip(before, after)):
        raise HubError(f"merged and unmerged logits differ by up to {worst:.3g} (tolerance atol={atol}, "
                       f"rtol={rtol}); the merged model was not saved")
    return worst


def merge(experiment_dir: str | Path, output_dir: str | Path, atol: float = 1e-4, rtol: float = 1e-3,
          overwrite: bool = False) -> dict:
    """Merge, save, reload and verify; returns what merge.json records."""
    from peft import PeftModel

    from . import data as data_mod
    from . import models
    from .rundir import LABELS_FILE, trained_labels
    from .generate import run_prompts
    from .resolve import resolve
    from .results import atomic_dir, write_json

    exp, out = Path(experiment_dir), Path(output_dir)
    if atol < 0 or rtol < 0:
        raise HubError(f"tolerances must be >= 0, got atol={atol}, rtol={rtol}")
    model_dir = exp / "model"
    if not (exp / "config.yaml").is_file():
        raise HubError(f"{exp} is not an experiment directory (no config.yaml)")
    if not (model_dir / "adapter_config.json").is_file():
        raise HubError(f"{model_dir} holds a full model, not an adapter: it is already standalone, "
                       "point TGI / vLLM at it directly")
    peft_type = json.loads((model_dir / "adapter_config.json").read_text()).get("peft_type", "")
    if peft_type in PROMPT_LEARNING:
        raise HubError(f"a {peft_type} adapter adds virtual tokens, not weights, so it cannot be merged; "
                       "serve the experiment with inference/server.py instead")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HubError(f"{out} is not empty; pass --overwrite to replace it")
    cfg = resolve(config_file=exp / "config.yaml")
    family = models.family_of(models.load_config(cfg.model.pretrained_ckpt), cfg.model.family)
    labels = trained_labels(model_dir)
    # fp32 whatever the run trained in: W + BA is added and checked exactly, and the saved folder
    # serves in any dtype (vLLM / TGI cast at load with --dtype).
    dtype = torch.float32
    base_path = models.resolve_path(cfg.model.pretrained_ckpt)
    kw = {"num_labels": len(labels) or None, "label_names": labels or None}
    # Full precision base even for QLoRA: the merged weights must be plain tensors.
    model = PeftModel.from_pretrained(models.load_base_model(base_path, family, dtype, **kw), model_dir)
    model.eval()
    tok = models.load_tokenizer(str(model_dir), family)
    # The same prompts the server would build, so the check covers the template tokens too.
    prompts = run_prompts(tok, family, data_mod.task_spec(cfg.data).kind, cfg.data, CHECK_TEXTS)
    before = logits_of(model, tok, family, prompts, cfg.data.max_source_length)
    merged = model.merge_and_unload()
    with atomic_dir(out) as tmp:  # a failed check keeps nothing
        merged.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if labels:
            write_json(tmp / LABELS_FILE, labels)
        cfg.dump(tmp / MERGED_CONFIG)
        reloaded = models.load_base_model(str(tmp), family, dtype, **kw)
        worst = compare(before, logits_of(reloaded, tok, family, prompts, cfg.data.max_source_length), atol, rtol)
        info = {"experiment_dir": str(exp), "base_model": cfg.model.pretrained_ckpt, "peft_type": peft_type,
                "family": family, "checked_prompts": len(prompts), "max_abs_logit_diff": worst,
                "atol": atol, "rtol": rtol}
        write_json(tmp / "merge.json", info)
    return info


def main(argv: list[str] | None = None) -> None:
    from .errors import run

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment_dir", required=True, help="a trained experiment whose model/ is an adapter")
    p.add_argument("--output_dir", required=True, help="where the standalone model folder goes")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute logit tolerance; the merge runs "
                   "in fp32 (default: %(default)s)")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative logit tolerance (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output_dir")
    args = p.parse_args(argv)

    def go():
        info = merge(args.experiment_dir, args.output_dir, args.atol, args.rtol, args.overwrite)
        print(json.dumps(info, indent=2))
        print(f"merged model saved to {args.output_dir}; serve it with TGI / vLLM (inference/tgi, "
              f"inference/vllm) or inference/server.py --model {args.output_dir}")

    run(go)


if __name__ == "__main__":
    main()
