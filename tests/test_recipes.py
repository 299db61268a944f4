"""Every recipe file validates against the real schema; bad recipes fail naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from seedbed.data.readers import resolve_data_path
from seedbed.recipe import FinetuneRecipe, Recipe, RecipeError, load_recipe, packaged_recipe, save_recipe

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    names = {p.name for p in RECIPES}
    assert "demo.yaml" in names and any("gpu" in n for n in names)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert any(getattr(recipe, s) is not None for s in Recipe.model_fields)
    assert path.read_text().startswith("#"), "each recipe's header comment gives the command that runs it"
    sections = (recipe.finetune, recipe.eval, recipe.serve, recipe.demo and recipe.demo.finetune,
                recipe.demo and recipe.demo.eval)
    for section in sections:
        fewshot = [p.partition("=")[2] for p in (getattr(section, "fewshot", None) or [])]
        for f in [*(getattr(section, "data", None) or []), *(getattr(section, "pool", None) or []), *fewshot]:
            if f.startswith("seedbed:"):
                assert resolve_data_path(f).is_file(), f


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_a_recipe_mapping_reads_the_files_it_names(path):
    """A recipe's `mapping` fits its shipped data: every record has the fields the mapping names."""
    from seedbed.data.readers import read_examples

    recipe = load_recipe(path)
    for section in (recipe.data, recipe.finetune, recipe.eval):
        if section is None or section.mapping is None:
            continue
        files = [f for f in [*getattr(section, "inputs", []), *getattr(section, "data", []),
                             *getattr(section, "pool", [])] if f.startswith("seedbed:")]
        for f in files:
            assert read_examples([f], section.mapping).examples, f


def test_demo_recipe_is_installed_with_the_package():
    assert packaged_recipe("demo.yaml").read_text() == (Path(__file__).parents[1] / "recipes/demo.yaml").read_text()


def test_bad_recipe_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  method: qlora\n  lr: -1\n  colour: blue\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(bad)
    message = str(e.value)
    assert str(bad) in message and "finetune.method" in message and "finetune.lr" in message and "colour" in message


def test_saved_recipe_round_trips(tmp_path):
    recipe = FinetuneRecipe(data=["a.jsonl"], lr=1e-4, packing=True)
    save_recipe(recipe, tmp_path / "recipe.yaml", "finetune")
    assert load_recipe(tmp_path / "recipe.yaml").finetune == recipe
