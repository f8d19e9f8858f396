"""The typed config: overrides at every depth, loud unknown keys, round-trips through config.yaml."""
import pytest

from llmhub.config import RunConfig, apply_overrides, load_yaml
from llmhub.errors import HubError
from llmhub.recipes import defaults


def test_nested_dotted_and_flat_overrides_merge():
    cfg = apply_overrides(RunConfig(), {"method": {"lora_r": 4}, "train.epochs": 2, "lora_dropout": "0.2"})
    assert (cfg.method.lora_r, cfg.train.epochs, cfg.method.lora_dropout) == (4, 2.0, 0.2)
    assert cfg.method.lora_alpha == RunConfig().method.lora_alpha  # untouched neighbours keep defaults


def test_unknown_key_lists_valid_ones():
    with pytest.raises(HubError, match="unknown config key 'lora_rank'; valid keys: .*lora_r"):
        apply_overrides(RunConfig(), {"lora_rank": 4})
    with pytest.raises(HubError, match="unknown config key 'train.lora_r'"):
        apply_overrides(RunConfig(), {"train.lora_r": 4})


@pytest.mark.parametrize("key,value", [("lora_r", "four"), ("lora_r", 2.5), ("epochs", "x"),
                                       ("prefix_projection", "maybe"), ("target_modules", 3)])
def test_wrong_types(key, value):
    with pytest.raises(HubError, match=key):
        apply_overrides(RunConfig(), {key: value})


def test_round_trip(tmp_path):
    cfg = apply_overrides(RunConfig(), {**defaults("llama2", "classification"), "target_modules": "q_proj,k_proj"})
    cfg.dump(tmp_path / "config.yaml")
    again = apply_overrides(RunConfig(), load_yaml(tmp_path / "config.yaml"))
    assert again == cfg and again.method.target_modules == ["q_proj", "k_proj"]


def test_recipes_deep_merge():
    d = defaults("llama2", "summarization")
    assert d["method"] == {"method": "qlora", "lora_alpha": 16, "lora_dropout": 0.1, "lora_r": 64}
    assert defaults("flan-t5", "dialogsum")["data"]["task"] == "dialogsum"
