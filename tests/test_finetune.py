"""The fine-tuning pipeline: a tiny offline recipe end to end, resume, overwrite, 2 processes, clean failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import TrainerCallback

from hf_infonc.errors import OutputDirError
from hf_infonc.finetune import run_recipe
from hf_infonc.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "model": {
        "family": "hf-clip",
        "tokenizer": "sentence-transformers/all-MiniLM-L6-v2",
        "config": {
            "text_config": {
                "vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2, "max_position_embeddings": 32, "pad_token_id": 0, "bos_token_id": 101,
                "eos_token_id": 102,
            },
            "vision_config": {
                "image_size": 16, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2,
            },
            "projection_dim": 16,
        },
    },
    "data": {"source": "digits", "max_train_samples": 64, "max_eval_samples": 40, "augment": False},
    "training": {
        "output_dir": "OUT",
        "max_steps": 6,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 20,
        "learning_rate": 1e-3,
        "logging_steps": 2,
        "save_strategy": "steps",
        "save_steps": 3,
        "use_cpu": True,
        "report_to": [],
        "disable_tqdm": True,
        "cma_weight": 0.3,
        "mi_weight": 0.1,
        "dataloader_drop_last": True,
    },
    "seed": 0,
}


def _recipe_file(tmp_path: Path, out: Path, **training) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["training"]["output_dir"] = str(out)
    raw["training"].update(training)
    path = tmp_path / f"tiny_{out.name}.yaml"
    path.write_text("# tiny offline recipe for tests\n" + yaml.safe_dump(raw))
    return path


class StopAfter(TrainerCallback):
    """Simulates an interruption: raises after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step + 1:
            raise KeyboardInterrupt("simulated interruption")


def test_tiny_recipe_end_to_end(tmp_path):
    out = tmp_path / "run"
    results = run_recipe(load_recipe(_recipe_file(tmp_path, out)))
    for phase in ("before", "after"):
        assert 0.0 <= results[phase]["accuracy"] <= 1.0
        assert 0.0 <= results[phase]["mir"] <= 1.0 and 0.0 <= results[phase]["hdr"] <= 1.0
    written = json.loads((out / "metrics.json").read_text())
    assert written["after"]["accuracy"] == pytest.approx(results["after"]["accuracy"])
    assert (out / "model.safetensors").exists() and (out / "recipe.yaml").exists()
    assert not list(out.glob("*.bin")), "only safetensors weights are written"
    from transformers import CLIPModel

    CLIPModel.from_pretrained(str(out))  # standard loading works
    # a second run into the same directory is refused, and --overwrite replaces it
    with pytest.raises(OutputDirError, match="already holds a run"):
        run_recipe(load_recipe(_recipe_file(tmp_path, out)))
    again = run_recipe(load_recipe(_recipe_file(tmp_path, out)), overwrite=True)
    assert again["after"]["accuracy"] == pytest.approx(results["after"]["accuracy"], abs=1e-6), "seeded runs repeat"


def test_resume_gives_same_final_metrics(tmp_path):
    straight = run_recipe(load_recipe(_recipe_file(tmp_path, tmp_path / "straight")))
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(_recipe_file(tmp_path, interrupted)), callbacks=[StopAfter(3)])
    assert (interrupted / "checkpoint-3").is_dir() and not (interrupted / "metrics.json").exists()
    resumed = run_recipe(load_recipe(_recipe_file(tmp_path, interrupted)), resume=True)
    for key in ("accuracy", "mir", "hdr", "loss"):
        assert resumed["after"][key] == pytest.approx(straight["after"][key], abs=1e-5), key


def test_resume_without_checkpoint_errors(tmp_path):
    with pytest.raises(OutputDirError, match="no checkpoint"):
        run_recipe(load_recipe(_recipe_file(tmp_path, tmp_path / "fresh")), resume=True)


def test_failure_before_training_leaves_no_directory(tmp_path):
    out = tmp_path / "broken"
    path = _recipe_file(tmp_path, out)
    raw = yaml.safe_load(path.read_text())
    raw["model"] = {"family": "hf-clip", "name_or_path": "someone/not-a-local-model"}
    path.write_text(yaml.safe_dump(raw))
    from hf_infonc.factory import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE=1 is set"):
        run_recipe(load_recipe(path))
    assert not out.exists()


def test_cli_bad_recipe_exit_code_and_no_output(tmp_path):
    out = tmp_path / "never"
    path = _recipe_file(tmp_path, out, learnig_rate=0.1)
    proc = subprocess.run(
        [sys.executable, "-m", "hf_infonc.cli", "finetune", str(path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    assert "training.learnig_rate: unknown key. Did you mean 'learning_rate'?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.distributed
def test_two_processes_match_one(tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 on the CPU (gloo) vs one process, same global batch."""
    one = run_recipe(load_recipe(_recipe_file(tmp_path, tmp_path / "one")))
    path = _recipe_file(tmp_path, tmp_path / "two", per_device_train_batch_size=4, save_strategy="no")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
        str(REPO / "scripts" / "finetune.py"), str(path),
    ]
    subprocess.run(command, check=True, env=env, timeout=900, cwd=tmp_path)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["num_processes"] == 2
    for phase in ("before", "after"):
        for key in ("accuracy", "mir", "hdr", "nc1"):
            assert two[phase][key] == pytest.approx(one[phase][key], abs=1e-4), (phase, key)


def test_eval_only_writes_metrics_without_training(tmp_path):
    out = tmp_path / "eval_only"
    results = run_recipe(load_recipe(_recipe_file(tmp_path, out)), eval_only=True)
    assert "after" not in results and "train" not in results
    assert 0.0 <= results["before"]["accuracy"] <= 1.0
    written = json.loads((out / "metrics.json").read_text())
    assert written["before"]["mir"] == pytest.approx(results["before"]["mir"])
    assert not (out / "model.safetensors").exists()
