"""Recipes: validation errors name the file and key; types are converted; overrides; ready recipes parse."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hf_infonc.recipe import RecipeError, apply_overrides, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))

BASE = {
    "model": {"family": "sequence-classification", "name_or_path": "sentence-transformers/all-MiniLM-L6-v2"},
    "data": {"source": "amazon_reviews"},
    "training": {"output_dir": "outputs/x", "learning_rate": "1e-4", "mi_weight": 0.1},
}


def _write(tmp_path: Path, raw: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _with(section: str, **values) -> dict:
    raw = {k: dict(v) for k, v in BASE.items()}
    raw.setdefault(section, {}).update(values)
    return raw


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_ready_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.output_dir
    assert path.read_text().lstrip().startswith("#"), "each recipe starts with a comment header"


def test_yaml_1e4_is_a_float(tmp_path):
    raw = yaml.safe_load("training:\n  learning_rate: 1e-4\n")
    assert raw["training"]["learning_rate"] == "1e-4"  # what YAML 1.1 does
    recipe = load_recipe(_write(tmp_path, _with("training", learning_rate="1e-4")))
    assert recipe.training["learning_rate"] == pytest.approx(1e-4) and isinstance(recipe.training["learning_rate"], float)
    assert recipe.training_arguments().learning_rate == pytest.approx(1e-4)


def test_unknown_key_suggests_nearest(tmp_path):
    path = _write(tmp_path, _with("training", learnig_rate=0.1))
    with pytest.raises(RecipeError, match=r"r\.yaml: training\.learnig_rate: unknown key\. Did you mean 'learning_rate'\?"):
        load_recipe(path)
    with pytest.raises(RecipeError, match=r"model\.trainig_mode: unknown key\. Did you mean 'training_mode'"):
        load_recipe(_write(tmp_path, _with("model", trainig_mode="full")))
    with pytest.raises(RecipeError, match=r"datta: unknown key\. Did you mean 'data'"):
        recipe_from_dict({**BASE, "datta": {}}, "x.yaml")


def test_wrong_type(tmp_path):
    with pytest.raises(RecipeError, match=r"training\.num_train_epochs: expected a number, got 'three'"):
        load_recipe(_write(tmp_path, _with("training", num_train_epochs="three")))
    with pytest.raises(RecipeError, match=r"data\.shots: expected int"):
        load_recipe(_write(tmp_path, _with("data", shots="many")))
    with pytest.raises(RecipeError, match=r"hub\.private: expected true or false"):
        load_recipe(_write(tmp_path, {**BASE, "hub": {"private": "maybe"}}))


def test_missing_required(tmp_path):
    raw = {k: dict(v) for k, v in BASE.items()}
    del raw["model"]["family"]
    with pytest.raises(RecipeError, match=r"model\.family: required key is missing"):
        load_recipe(_write(tmp_path, raw))
    raw = {k: dict(v) for k, v in BASE.items()}
    del raw["training"]["output_dir"]
    with pytest.raises(RecipeError, match=r"training\.output_dir: required key is missing"):
        load_recipe(_write(tmp_path, raw))
    with pytest.raises(RecipeError, match=r"data: required section is missing"):
        recipe_from_dict({"model": BASE["model"], "training": BASE["training"]}, "x.yaml")


def test_incompatible_combinations(tmp_path):
    with pytest.raises(RecipeError, match=r"model\.training_mode: 'coop' needs a CLIP model"):
        load_recipe(_write(tmp_path, _with("model", training_mode="coop")))
    with pytest.raises(RecipeError, match=r"'amazon_reviews' is text data, but model\.family is 'hf-clip'"):
        load_recipe(_write(tmp_path, _with("model", family="hf-clip")))
    with pytest.raises(RecipeError, match=r"cma_weight=1\.5 must lie in \[0, 1\]"):
        load_recipe(_write(tmp_path, _with("training", cma_weight=1.5)))
    with pytest.raises(RecipeError, match=r"model\.family: 'hf-clp' is not one of \[.*\]\. Did you mean 'hf-clip'"):
        load_recipe(_write(tmp_path, _with("model", family="hf-clp")))
    with pytest.raises(RecipeError, match=r"push_to_hub is true but no repo_id"):
        load_recipe(_write(tmp_path, {**BASE, "hub": {"push_to_hub": True}}))


def test_overrides(tmp_path):
    path = _write(tmp_path, BASE)
    recipe = load_recipe(path, ["training.learning_rate=3e-5", "data.shots=4", "seed=7", "model.lora.r=4"])
    assert recipe.training["learning_rate"] == pytest.approx(3e-5)
    assert recipe.data.shots == 4 and recipe.seed == 7 and recipe.model.lora.r == 4
    with pytest.raises(RecipeError, match="must look like section.key=value"):
        load_recipe(path, ["training.learning_rate"])
    with pytest.raises(RecipeError, match=r"training\.warmup_stepz: unknown key"):
        load_recipe(path, ["training.warmup_stepz=3"])
    raw = apply_overrides(BASE, ["training.mi_weight=0.5"])
    assert raw["training"]["mi_weight"] == 0.5 and BASE["training"]["mi_weight"] == 0.1  # input untouched


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="is a folder, not a recipe file"):
        load_recipe(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp.yaml", "deepspeed_zero2.yaml"])
def test_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "recipes" / "accelerate" / name))
    assert config.num_processes == 8 and config.mixed_precision == "bf16"
    expected = {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP", "deepspeed_zero2.yaml": "DEEPSPEED"}[name]
    assert str(config.distributed_type).endswith(expected)
    if name == "deepspeed_zero2.yaml":
        assert config.deepspeed_config["zero_stage"] == 2
    if name == "fsdp.yaml":
        assert config.fsdp_config["fsdp_version"] == 2
