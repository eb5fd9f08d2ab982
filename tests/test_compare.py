"""``hf-infonc compare``: parsing, the paired statistics against scipy, resume, failed runs, the CLI's errors,
and a real end-to-end comparison of a tiny demo recipe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from scipy import stats

from hf_infonc.compare import (
    METRICS,
    CompareError,
    compare,
    describe,
    paired_difference,
    parse_seeds,
    parse_variants,
    split_assignments,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "recipes" / "demo.yaml")

# ---------------------------------------------------------------------------- parsing


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds(["0", "1", "2"]) == [0, 1, 2]
    assert parse_seeds(["0-1", "7"]) == [0, 1, 7]
    assert parse_seeds("3") == [3]
    for bad, message in [("4-0", "runs backwards. Write it as 0-4"), ("a-b", "'a-b' is not a seed or a range"),
                         ("", "no seeds given"), ("0,0", "seed 0 is listed twice"), ("-1", "is not a seed")]:
        with pytest.raises(CompareError, match=message):
            parse_seeds(bad)


def test_parse_variants_merges_names_and_keeps_quoted_commas():
    variants = parse_variants([
        "ce:training.cma_weight=0,training.mi_weight=0",
        "ce",
        "both:",
        "sgd:training.optim_args=\"momentum=0.9,nesterov=True\", data.class_names=[a, b]",
        "sgd:training.learning_rate=0.1",
    ])
    assert [v.name for v in variants] == ["ce", "both", "sgd"]
    assert variants[0].overrides == ["training.cma_weight=0", "training.mi_weight=0"]
    assert variants[1].overrides == []
    assert variants[2].overrides == [
        'training.optim_args="momentum=0.9,nesterov=True"', "data.class_names=[a, b]", "training.learning_rate=0.1",
    ]
    assert split_assignments("a.b=[1, {c: 2, d: 3}],e='x,y'") == ["a.b=[1, {c: 2, d: 3}]", "e='x,y'"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ce:training.cma_weight", "'training.cma_weight' must look like KEY=VALUE"),
        ("ce:=3", "'=3' must look like KEY=VALUE"),
        (":training.cma_weight=0", "'' is not a usable variant name"),
        ("a/b:training.cma_weight=0", "'a/b' is not a usable variant name"),
        ("ce:training.cma_weight=0,training.cma_weight=1", "sets training.cma_weight twice"),
    ],
)
def test_parse_variants_errors(spec, message):
    with pytest.raises(CompareError, match=message):
        parse_variants([spec])


# ---------------------------------------------------------------------------- statistics against scipy

BASELINE = [0.912, 0.905, 0.921, 0.899, 0.915]
VARIANT = [0.918, 0.903, 0.930, 0.905, 0.921]


@pytest.mark.parametrize(
    ("baseline", "variant"),
    [
        (BASELINE, VARIANT),
        (BASELINE[:2], VARIANT[:2]),  # n = 2, one degree of freedom
        ([3.2, 1.0, 7.5, 2.25], [1.1, 0.9, 2.0, 1.75]),  # large negative differences
        ([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]),  # the same difference in every seed: t = +inf, p = 0
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),  # no difference at all: t and p undefined
    ],
)
@pytest.mark.filterwarnings("ignore:Precision loss occurred")
def test_paired_difference_matches_scipy(baseline, variant):
    seeds = range(len(baseline))
    ours = paired_difference(dict(zip(seeds, baseline)), dict(zip(seeds, variant)))
    reference = stats.ttest_rel(variant, baseline)
    interval = reference.confidence_interval(0.95)
    assert ours["n"] == len(baseline) and ours["df"] == reference.df
    assert ours["mean_difference"] == pytest.approx(float(sum(v - b for v, b in zip(variant, baseline)) / len(baseline)))
    assert ours["ci_low"] == pytest.approx(float(interval.low), rel=1e-12, abs=1e-15)
    assert ours["ci_high"] == pytest.approx(float(interval.high), rel=1e-12, abs=1e-15)
    if math.isfinite(reference.statistic):
        assert ours["t"] == pytest.approx(float(reference.statistic), rel=1e-12)
    else:
        assert ours["t"] is None  # ±inf (strict JSON) or undefined
    if math.isnan(reference.pvalue):
        assert ours["p_value"] is None and ours["verdict"] == "no difference: identical in every paired seed"
    else:
        assert ours["p_value"] == pytest.approx(float(reference.pvalue), rel=1e-10, abs=1e-300)
        expected = "distinguishable from seed noise (p < 0.05)" if reference.pvalue < 0.05 else \
            "not distinguishable from seed noise"
        assert ours["verdict"] == expected


def test_paired_difference_pairs_only_common_seeds_and_needs_two():
    baseline = {0: 0.90, 1: 0.91, 2: None, 3: 0.93, 4: 0.92}
    variant = {0: 0.92, 1: 0.90, 2: 0.99, 3: 0.95}  # seed 4 failed for the variant, seed 2 for the baseline
    ours = paired_difference(baseline, variant)
    reference = stats.ttest_rel([0.92, 0.90, 0.95], [0.90, 0.91, 0.93])
    assert ours["seeds"] == [0, 1, 3]
    assert ours["p_value"] == pytest.approx(reference.pvalue, rel=1e-10)
    one = paired_difference({0: 0.9, 1: 0.8}, {0: 0.95})
    assert one["n"] == 1 and one["mean_difference"] == pytest.approx(0.05)
    assert one["ci_low"] is None and one["p_value"] is None and one["verdict"].startswith("not testable: one paired seed")
    assert paired_difference({0: 0.9}, {1: 0.9})["verdict"].startswith("not testable: no paired seeds")


def test_describe():
    summary = describe(BASELINE)
    assert summary["mean"] == pytest.approx(sum(BASELINE) / 5)
    assert summary["sd"] == pytest.approx(float(stats.tstd(BASELINE)))
    assert describe([0.5]) == {"n": 1, "mean": 0.5, "sd": None}
    assert describe([]) == {"n": 0, "mean": None, "sd": None}


# ---------------------------------------------------------------------------- runs, with a stand-in for finetune

FAKE_FINETUNE = textwrap.dedent('''
    """Stand-in for `hf-infonc finetune`: records the call, writes metrics.json and recipe.yaml from the --set values."""
    import json, os, sys
    from pathlib import Path
    import yaml

    recipe, rest = sys.argv[1], sys.argv[2:]
    items = [rest[i + 1] for i, token in enumerate(rest) if token == "--set"]
    raw = yaml.safe_load(Path(recipe).read_text())
    for item in items:
        key, value = item.split("=", 1)
        *sections, name = key.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = yaml.safe_load(value)
    out, seed, training = Path(raw["training"]["output_dir"]), raw["seed"], raw["training"]
    with open(os.environ["FAKE_CALLS"], "a") as calls:
        calls.write(json.dumps({"out": str(out), "overwrite": "--overwrite" in rest}) + "\\n")
    out.mkdir(parents=True, exist_ok=True)
    if f"{out.parent.name}/{out.name}" in os.environ.get("FAKE_FAIL", "").split(","):
        (out / "checkpoint-1").mkdir(exist_ok=True)  # an interrupted run leaves a partial folder
        print("training...", flush=True)
        raise ValueError("boom: simulated failure")
    cma, mi = training.get("cma_weight", 0.0), training.get("mi_weight", 0.0)
    wobble = [0.004, -0.002, 0.001, -0.003][(seed * 3 + int(cma * 10)) % 4]
    after = {"accuracy": 0.80 + 0.01 * seed + 0.05 * cma + wobble, "mir": 0.3 + mi + wobble,
             "hdr": 0.2 - 0.1 * cma, "nc1": float("nan") if cma else 1.5}
    (out / "metrics.json").write_text(json.dumps({"seed": seed, "after": after, "wall_time_s": 1.0 + seed}))
    (out / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
''')

VARIANTS = ["ce:training.cma_weight=0,training.mi_weight=0", "cma:training.mi_weight=0"]


@pytest.fixture
def fake_finetune(tmp_path, monkeypatch):
    script = tmp_path / "fake_finetune.py"
    script.write_text(FAKE_FINETUNE)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))

    def run(out, variants=VARIANTS, seeds="0-2", **kwargs):
        return compare(DEMO, variants, seeds, out, finetune_command=[sys.executable, str(script)], jobs=2,
                       log=lambda message: None, **kwargs)

    def calls_made():
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    return run, calls_made


def _strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_failed_run_is_reported_and_resume_reruns_only_it(tmp_path, fake_finetune, monkeypatch):
    run, calls_made = fake_finetune
    out = tmp_path / "cmp"
    monkeypatch.setenv("FAKE_FAIL", "cma/seed-2")
    document = run(out)
    assert len(calls_made()) == 6
    failed = [r for r in document["runs"] if r["status"] == "failed"]
    assert [(r["variant"], r["seed"]) for r in failed] == [("cma", 2)]
    assert failed[0]["returncode"] == 1 and failed[0]["error"] == "ValueError: boom: simulated failure"
    assert failed[0]["log"] == "cma/seed-2.log" and (out / "cma" / "seed-2.log").is_file()

    saved = _strict_json(out / "comparison.json")
    assert saved == json.loads(json.dumps(document))
    assert saved["variants"] == [{"name": "ce", "overrides": ["training.cma_weight=0", "training.mi_weight=0"]},
                                 {"name": "cma", "overrides": ["training.mi_weight=0"]}]
    # the statistics are those of the per-seed values, paired over the seeds both finished (0 and 1)
    accuracy = saved["statistics"]["accuracy"]
    ce = [json.loads((out / "ce" / f"seed-{s}" / "metrics.json").read_text())["after"]["accuracy"] for s in range(3)]
    cma = [json.loads((out / "cma" / f"seed-{s}" / "metrics.json").read_text())["after"]["accuracy"] for s in range(2)]
    assert accuracy["variants"]["ce"]["per_seed"] == {"0": ce[0], "1": ce[1], "2": ce[2]}
    assert accuracy["variants"]["cma"]["per_seed"] == {"0": cma[0], "1": cma[1], "2": None}
    assert accuracy["variants"]["ce"]["sd"] == pytest.approx(float(stats.tstd(ce)))
    difference = accuracy["differences_from_baseline"]["cma"]
    reference = stats.ttest_rel(cma, ce[:2])
    assert difference["seeds"] == [0, 1] and difference["p_value"] == pytest.approx(reference.pvalue, rel=1e-10)
    assert saved["statistics"]["nc1"]["variants"]["cma"]["n"] == 0  # NaN in metrics.json is a missing value

    table = (out / "comparison.md").read_text()
    assert "## Failed runs" in table and "| cma | 2 | 1 | `cma/seed-2.log` | ValueError: boom: simulated failure |" in table
    mean, sd = (cma[0] + cma[1]) / 2, abs(cma[0] - cma[1]) / math.sqrt(2)
    assert f"| cma | {mean:.4f} ± {sd:.4f} | {cma[0]:.4f}, {cma[1]:.4f}, — |" in table
    assert "| ce | " in table and "| baseline |" in table and "hf-infonc compare" in table
    assert (out / "comparison.png").stat().st_size > 0

    # run again: finished runs are kept (not rerun, files untouched), the failed one is retried with --overwrite
    kept = out / "ce" / "seed-0" / "metrics.json"
    stamp = kept.stat().st_mtime_ns
    again = run(out)
    assert calls_made()[6:] == [{"out": str(out / "cma" / "seed-2"), "overwrite": True}]
    assert kept.stat().st_mtime_ns == stamp
    assert (out / "comparison.md").read_text() == table and again == document

    monkeypatch.setenv("FAKE_FAIL", "")
    fixed = run(out)
    assert len(calls_made()) == 8 and all(r["status"] == "finished" for r in fixed["runs"])
    assert "Failed runs" not in (out / "comparison.md").read_text()
    assert fixed["statistics"]["accuracy"]["differences_from_baseline"]["cma"]["n"] == 3


def test_resume_refuses_a_folder_with_other_settings(tmp_path, fake_finetune):
    run, calls_made = fake_finetune
    out = tmp_path / "cmp"
    run(out, seeds="0")
    with pytest.raises(CompareError, match=r"cma/seed-0 holds a finished run with other settings "
                                          r"\(training.cma_weight: 0.3 there, 0.5 now\)"):
        run(out, variants=[VARIANTS[0], "cma:training.mi_weight=0,training.cma_weight=0.5"], seeds="0")
    assert len(calls_made()) == 2


def test_dry_run_lists_the_paired_commands(tmp_path, fake_finetune):
    run, calls_made = fake_finetune
    out = tmp_path / "cmp"
    listed = run(out, seeds="3,5", overrides=["training.num_train_epochs=1"], dry_run=True)["runs"]
    assert [(r["variant"], r["seed"]) for r in listed] == [("ce", 3), ("cma", 3), ("ce", 5), ("cma", 5)]
    first = listed[0]["command"]
    assert "--set training.num_train_epochs=1 --set training.cma_weight=0 --set training.mi_weight=0 --set seed=3" in first
    assert f"--set training.output_dir={out / 'ce' / 'seed-3'}" in first and "--set hub.push_to_hub=false" in first
    assert "data.seed" not in first  # the data split stays the recipe's for every run
    assert not calls_made() and not out.exists()


def test_a_token_is_never_shown_or_recorded(tmp_path, fake_finetune, monkeypatch):
    """A secret --set value (and any token value) is redacted in the printed commands, the logs and the comparison
    files; the runs themselves get the real value."""
    token = "hf_" + "CompareT0ken" + "x" * 22
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    script = tmp_path / "fake_finetune.py"
    script.write_text(FAKE_FINETUNE)
    out, shown = tmp_path / "cmp", []
    arguments = dict(overrides=[f"training.hub_token={token}"], finetune_command=[sys.executable, str(script)],
                     log=shown.append)
    listed = compare(DEMO, ["ce", f"named:training.run_name={token}"], "0", out, dry_run=True, **arguments)
    assert token not in json.dumps(listed) + "\n".join(shown)
    assert "--set 'training.hub_token=<redacted>'" in listed["runs"][0]["command"]
    document = compare(DEMO, ["ce", f"named:training.run_name={token}"], "0", out, plot=False, **arguments)
    assert "training.hub_token=<redacted>" in document["command"]
    for name in ("comparison.json", "comparison.md", "ce/seed-0.log", "named/seed-0.log"):
        path = out / name
        assert token not in path.read_text(), path
    assert token not in "\n".join(shown)
    saved = yaml.safe_load((out / "named" / "seed-0" / "recipe.yaml").read_text())["training"]
    assert saved["hub_token"] == token and saved["run_name"] == token  # what the run itself was given


@pytest.mark.parametrize(
    ("arguments", "messages"),
    [
        (["--variant", "ce:training.cma_weight"],
         ["error: --variant 'ce:training.cma_weight': 'training.cma_weight' must look like KEY=VALUE"]),
        (["--variant", "ce", "--variant", "cma:training.cma_weigth=0.5"],
         ["error: --variant cma: ", "training.cma_weigth: unknown key. Did you mean 'cma_weight'?"]),
        (["--variant", "ce", "--seeds", "4-0"], ["error: --seeds '4-0': the range '4-0' runs backwards"]),
        (["--variant", "ce", "--set", "seed=3"], ["error: --set: seed cannot be set here: the training seed comes from --seeds"]),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(tmp_path, arguments, messages):
    proc = subprocess.run(
        [sys.executable, "-m", "hf_infonc.cli", "compare", DEMO, *arguments, "--out", str(tmp_path / "cmp")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    for part in messages:
        assert part in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cmp").exists()


# ---------------------------------------------------------------------------- end to end, the real finetune


@pytest.mark.slow
def test_cli_end_to_end_on_the_demo_recipe(tmp_path):
    """2 variants × 2 seeds of a 2-step demo run, plus a variant that fails at run time; then the same command again."""
    out = tmp_path / "cmp"
    command = [
        sys.executable, "-m", "hf_infonc.cli", "compare", "recipes/demo.yaml",
        "--variant", "ce:training.cma_weight=0,training.mi_weight=0", "--variant", "cma:training.mi_weight=0",
        "--variant", "broken:data.source=csv,data.data_files=/nonexistent/digits.csv",
        "--seeds", "0-1", "--jobs", "2", "--out", str(out),
        "--set", "training.max_steps=2", "--set", "data.max_eval_samples=50", "--set", 'training.eval_strategy="no"',
        "--set", "training.disable_tqdm=true",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    first = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert first.returncode == 1, first.stdout + first.stderr
    document = _strict_json(out / "comparison.json")
    status = {(r["variant"], r["seed"]): r["status"] for r in document["runs"]}
    assert status == {("ce", 0): "finished", ("cma", 0): "finished", ("broken", 0): "failed",
                      ("ce", 1): "finished", ("cma", 1): "finished", ("broken", 1): "failed"}
    for variant in ("ce", "cma"):
        for seed in (0, 1):
            metrics = json.loads((out / variant / f"seed-{seed}" / "metrics.json").read_text())
            assert metrics["seed"] == seed
            for metric in METRICS:
                assert document["statistics"][metric.key]["variants"][variant]["per_seed"][str(seed)] == metric.read(metrics)
    # paired: at each seed both variants start from the same model on the same data, so their accuracy
    # before training is the same
    before = {(v, s): json.loads((out / v / f"seed-{s}" / "metrics.json").read_text())["before"]["accuracy"]
              for v in ("ce", "cma") for s in (0, 1)}
    assert before[("ce", 0)] == before[("cma", 0)] and before[("ce", 1)] == before[("cma", 1)]
    broken = next(r for r in document["runs"] if r["variant"] == "broken")
    assert broken["returncode"] != 0 and "nonexistent" in broken["error"]
    table = (out / "comparison.md").read_text()
    assert "## Failed runs" in table and f"| broken | 0 | {broken['returncode']} | `broken/seed-0.log` |" in table
    assert "2 run(s) failed" in first.stderr and "Traceback" not in first.stderr
    assert table in first.stdout  # the table is printed too

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("c*/seed-*/metrics.json")}
    second = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert second.returncode == 1
    assert second.stdout.count("finished earlier, kept") == 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("c*/seed-*/metrics.json")} == stamps
    assert (out / "comparison.md").read_text() == table
