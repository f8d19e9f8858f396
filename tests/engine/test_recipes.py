"""Every shipped recipe and grid loads and resolves; a bad recipe file is one clear error."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmhub import recipes
from llmhub.errors import HubError
from llmhub.study.grid import expand, load_grid

ROOT = Path(__file__).resolve().parents[2]
GRIDS = sorted(ROOT.glob("*/grids/*.yaml"))


def test_every_model_folder_has_a_recipe_and_nothing_else_does():
    """Recipes are package data (llmhub/config_hub/<folder>/recipe.yaml), one per model folder of the checkout."""
    assert sorted(p.parent.name for p in ROOT.glob("*/grids")) == sorted(recipes.FOLDERS)
    assert all(recipes.recipe_path(m).is_relative_to(Path(recipes.__file__).parent) for m in recipes.FOLDERS)


@pytest.mark.parametrize("model", recipes.FOLDERS)
def test_recipe_loads_for_every_task_and_action(model):
    recipe = recipes.load_recipe(model)
    assert recipe["base"]["model"]["pretrained_ckpt"]
    for task in recipe["tasks"]:
        for action in ("train", "baseline"):
            d = recipes.defaults(model, task, action)
            assert d["data"]["task"] == task


def test_qlora_recipes_state_their_batch_arithmetic():
    for model in ("llama2", "falcon", "redpajama"):
        text = recipes.recipe_path(model).read_text()
        assert "4 x 4 accumulation = 16 examples per optimizer step" in text
        train = recipes.load_recipe(model)["base"]["train"]
        assert train["batch_size"] * train["grad_accum"] == 16


@pytest.mark.parametrize("grid", GRIDS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_shipped_grid_expands(grid, tmp_path):
    spec = load_grid(grid)
    assert spec.get("model") == grid.parent.parent.name  # a folder's grids start from its recipe
    runs = expand(spec, tmp_path, src=str(grid))
    assert runs and len({r.name for r in runs}) == len(runs)


def test_bad_recipe_key_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "llama2").mkdir()
    (tmp_path / "llama2" / "recipe.yaml").write_text("base:\n  train: {lora_rank: 4}\n")
    monkeypatch.setattr(recipes, "HUB", tmp_path)
    recipes.load_recipe.cache_clear()
    try:
        with pytest.raises(HubError, match=r"recipe.yaml: base: unknown config key 'train.lora_rank'"):
            recipes.load_recipe("llama2")
    finally:
        recipes.load_recipe.cache_clear()
