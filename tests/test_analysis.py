"""``hf-infonc analyze``: linear mode connectivity and magnitude pruning of saved runs, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from test_finetune import TINY

from hf_infonc.analysis.common import AnalysisError
from hf_infonc.analysis.lmc import check_same_architecture, interpolate_states, linear_mode_connectivity
from hf_infonc.analysis.prune import parse_sparsities, prunable_parameters, prune_analysis
from hf_infonc.cli import build_parser, main
from hf_infonc.finetune import run_recipe
from hf_infonc.recipe import load_recipe

COMPARED = ("accuracy", "mir", "hdr", "loss", "class_mir", "nc1", "nc4")


def _run(root: Path, name: str, *, model: dict | None = None, **training) -> Path:
    """A tiny `hf-infonc finetune` run (TINY recipe of test_finetune) written to root/name."""
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    out = root / name
    raw["training"].update({"output_dir": str(out), "save_strategy": "no", **training})
    if model is not None:
        raw["model"] = model
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    run_recipe(load_recipe(path))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two checkpoints from one initialisation (seed 0) trained on different data orders (data_seed),
    as in the paper's LMC; a smaller CLIP (other projection size); a ViT classifier."""
    root = tmp_path_factory.mktemp("analysis_runs")
    small = yaml.safe_load(yaml.safe_dump(TINY["model"]))
    small["config"]["projection_dim"] = 8
    vit = {
        "family": "image-classification",
        "config": {"model_type": "vit", "image_size": 16, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                   "num_hidden_layers": 1, "num_attention_heads": 2},
    }
    return {
        "a": _run(root, "a", data_seed=0, save_strategy="steps", save_steps=3, save_only_model=True),
        "b": _run(root, "b", data_seed=1),
        "small": _run(root, "small", model=small, max_steps=1),
        "vit": _run(root, "vit", model=vit, max_steps=1),
    }


def test_lmc_end_points_repeat_each_run(runs, tmp_path):
    out = tmp_path / "lmc"
    document = linear_mode_connectivity(runs["a"], runs["b"], points=3, out=out, progress=False)
    after_a = json.loads((runs["a"] / "metrics.json").read_text())["after"]
    after_b = json.loads((runs["b"] / "metrics.json").read_text())["after"]
    results = document["results"]
    assert [r["omega"] for r in results] == [0.0, 0.5, 1.0]
    for key in COMPARED:
        assert results[0][key] == pytest.approx(after_a[key], abs=1e-6), key
        assert results[-1][key] == pytest.approx(after_b[key], abs=1e-6), key
        assert math.isfinite(results[1][key]), key
    assert after_a["accuracy"] != after_b["accuracy"] or after_a["mir"] != after_b["mir"], "two different models"
    written = json.loads((out / "lmc.json").read_text())
    assert written["results"][1]["mir"] == pytest.approx(results[1]["mir"])
    assert written["num_classes"] == 10 and written["collapse"]["hdr"] == 0.0
    assert written["barrier"]["accuracy"] >= 0.0
    assert (out / "lmc.png").read_bytes()[:4] == b"\x89PNG"


def test_lmc_from_a_checkpoint_folder(runs, tmp_path):
    """A checkpoint-N folder inside a run directory uses the run's recipe.yaml."""
    document = linear_mode_connectivity(runs["a"] / "checkpoint-3", runs["a"], points=2, out=tmp_path / "c", plot=False,
                                        progress=False)
    after_a = json.loads((runs["a"] / "metrics.json").read_text())["after"]
    assert document["results"][1]["accuracy"] == pytest.approx(after_a["accuracy"], abs=1e-6)
    assert document["results"][1]["mir"] == pytest.approx(after_a["mir"], abs=1e-6)
    assert document["results"][0]["mir"] != pytest.approx(after_a["mir"], abs=1e-9), "step 3 is another model"
    assert document["recipe"] == str(runs["a"] / "recipe.yaml")


def test_interpolation_keeps_integer_buffers_and_end_points():
    a = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([1, 2])}
    b = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([7, 8])}
    assert torch.equal(interpolate_states(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate_states(a, b, 1.0)["w"], b["w"])
    middle = interpolate_states(a, b, 0.25)
    assert torch.allclose(middle["w"], torch.tensor([1.5, 3.0])) and torch.equal(middle["ids"], a["ids"])
    with pytest.raises(ValueError, match="first mismatching key 'v' is in B but not in A"):
        check_same_architecture(a, {**b, "v": torch.zeros(1)})


def test_lmc_mismatched_checkpoints_error(runs, tmp_path):
    with pytest.raises(ValueError, match=r"first mismatching key '(visual|text)_projection\.weight' has shape"):
        linear_mode_connectivity(runs["a"], runs["small"], points=3, out=tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="model.family differs: 'hf-clip' .* vs 'image-classification'"):
        linear_mode_connectivity(runs["a"], runs["vit"], points=3, out=tmp_path / "y", progress=False)
    with pytest.raises(AnalysisError, match="no recipe.yaml"):
        linear_mode_connectivity(runs["a"], tmp_path, points=3, out=tmp_path / "z", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_prune_through_the_cli(runs, tmp_path, capsys, request):
    from transformers.utils.logging import enable_progress_bar, is_progress_bar_enabled

    if is_progress_bar_enabled():  # --no-progress turns transformers' bars off for the process: on again after
        request.addfinalizer(enable_progress_bar)
    out = tmp_path / "prune"
    code = main(["analyze", "prune", str(runs["a"]), "--sparsity", "0,0.5", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr()
    assert "MIR(b,a)" in printed.out
    assert "it/s]" not in printed.err and "s/it]" not in printed.err  # --no-progress: no bar, evaluations' included
    document = json.loads((out / "prune.json").read_text())
    zero, half = document["results"]
    # sparsity 0: the same model, so the same features and metrics as the unpruned run
    assert zero["achieved_sparsity"] == 0.0
    after_a = json.loads((runs["a"] / "metrics.json").read_text())["after"]
    for key in COMPARED:
        assert zero[key] == pytest.approx(after_a[key], abs=1e-6), key
    # identical features: HDR = 0 and MIR(before, after) = MIR(before, before) (not 1 in general:
    # MI(K, K) = 2H(K) - H(K⊙K) < H(K) unless H(K⊙K) = H(K); hence the relative value)
    assert zero["hdr_before_after"] == pytest.approx(0.0, abs=1e-12)
    assert zero["mir_before_after"] == pytest.approx(document["mir_self"], abs=1e-12)
    assert zero["mir_before_after_relative"] == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < document["mir_self"] <= 1.0
    assert half["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0.0 <= half["mir_before_after"] <= 1.0 and half["hdr_before_after"] > 0
    assert half["accuracy"] is not None and 0.0 <= half["accuracy"] <= 1.0
    assert document["prunable_parameters"] > 0 and document["initial_sparsity"] == 0.0
    assert (out / "prune.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluation_trainer_progress_sets_disable_tqdm(runs, tmp_path):
    """progress=False (``--no-progress``) turns off the evaluation bars; otherwise the recipe's setting holds."""
    from hf_infonc.analysis.common import evaluation_trainer, load_run

    run = load_run(runs["a"], overrides=["training.disable_tqdm=false"])
    assert evaluation_trainer(run, tmp_path, progress=False).args.disable_tqdm is True
    assert evaluation_trainer(run, tmp_path).args.disable_tqdm is False
    quiet = load_run(runs["a"], overrides=["training.disable_tqdm=true"])
    assert evaluation_trainer(quiet, tmp_path).args.disable_tqdm is True


def test_prune_vit_classifier_prunes_linear_and_conv_weights_only(runs, tmp_path):
    document = prune_analysis(runs["vit"], [0.9], out=tmp_path / "p", plot=False, progress=False)
    assert document["results"][0]["achieved_sparsity"] == pytest.approx(0.9, abs=1e-3)
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(str(runs["vit"]))
    names = {type(m).__name__ for m, _ in prunable_parameters(model)}
    assert names == {"Linear", "Conv2d"}
    assert model.classifier in [m for m, _ in prunable_parameters(model)]


def test_cli_parsing_and_errors(runs, tmp_path, capsys):
    args = build_parser().parse_args(["analyze", "lmc", "A", "B", "--points", "5", "--set", "data.max_eval_samples=8"])
    assert (args.checkpoint_a, args.checkpoint_b, args.points, args.overrides) == ("A", "B", 5, ["data.max_eval_samples=8"])
    args = build_parser().parse_args(["analyze", "prune", "C", "--sparsity", "0.5,0.9", "--recipe", "r.yaml"])
    assert (args.checkpoint, args.sparsity, args.recipe) == ("C", "0.5,0.9", "r.yaml")
    assert parse_sparsities(args.sparsity) == [0.5, 0.9]
    with pytest.raises(ValueError, match="must lie in"):
        parse_sparsities("0.5,1.5")
    args = build_parser().parse_args(["analyze", "grokking", "--steps", "3", "--out", "x"])
    assert args.grokking_argv == ["--steps", "3", "--out", "x"]
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "grokking", "--help"])  # delegated to hf_infonc.analysis.grokking.main
    assert exit_info.value.code == 0
    assert "--steps" in capsys.readouterr().out
    # a user error: message, exit status 2, no traceback
    code = main(["analyze", "lmc", str(runs["a"]), str(runs["small"]), "--points", "2", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "first mismatching key" in capsys.readouterr().err
