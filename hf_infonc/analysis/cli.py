"""``hf-infonc analyze {lmc,prune,grokking}``: the paper's analyses, one command each (docs/analysis.md).

``A``, ``B`` and ``CKPT`` are output directories of ``hf-infonc finetune`` (or ``checkpoint-N`` folders inside
them); every argument after ``grokking`` goes to :func:`hf_infonc.analysis.grokking.main`. The training-dynamics
analysis is not a command: set ``analysis: {info_dynamics: true}`` in the recipe (:mod:`hf_infonc.callbacks`).
"""

from __future__ import annotations

import argparse
from typing import Any


def _common(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--recipe", default=None, help="recipe to rebuild the model and data from (default: the "
                        "checkpoint's recipe.yaml, or its parent's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set data.max_eval_samples=1000 (repeatable)")
    parser.add_argument("--out", default=None, help=f"output folder (default: <checkpoint>/analysis/{name})")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="write the JSON only")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of the analysis that the options of :func:`_common` give; ``--no-progress`` also turns
    off transformers' own bars (loading the saved weights) for this process."""
    if not args.progress:
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()
    return {name: getattr(args, name) for name in ("recipe", "overrides", "out", "plot", "progress")}


def _run_lmc(args: argparse.Namespace) -> int:
    from hf_infonc.analysis.lmc import linear_mode_connectivity

    document = linear_mode_connectivity(args.checkpoint_a, args.checkpoint_b, points=args.points, **_options(args))
    print(f"{'ω':>6} {'accuracy':>9} {'MIR':>8} {'HDR':>8} {'loss':>8}")
    for r in document["results"]:
        print(f"{r['omega']:>6.3f} " + " ".join(_fmt(r.get(key)) for key in ("accuracy", "mir", "hdr", "loss")))
    barrier = document["barrier"]
    print(f"barriers: accuracy {_fmt(barrier['accuracy'])}, MIR {_fmt(barrier['mir'])}, loss {_fmt(barrier['loss'])}")
    return _wrote(args, args.checkpoint_a, "lmc")


def _run_prune(args: argparse.Namespace) -> int:
    from hf_infonc.analysis.prune import prune_analysis

    document = prune_analysis(args.checkpoint, args.sparsity, batch_size=args.batch_size, **_options(args))
    baseline = _fmt(document["baseline"].get("accuracy"))
    print(f"unpruned: accuracy {baseline}, MIR(before, before) {_fmt(document['mir_self'])}")
    print(f"{'sparsity':>9} {'achieved':>9} {'accuracy':>9} {'MIR(b,a)':>9} {'relative':>9} {'MIR':>8} {'HDR':>8}")
    for r in document["results"]:
        print(
            f"{r['sparsity']:>9.3f} {r['achieved_sparsity']:>9.4f} {_fmt(r.get('accuracy'))} "
            f"{_fmt(r.get('mir_before_after'), 9)} {_fmt(r.get('mir_before_after_relative'), 9)} "
            f"{_fmt(r.get('mir'))} {_fmt(r.get('hdr'))}"
        )
    return _wrote(args, args.checkpoint, "prune")


def _wrote(args: argparse.Namespace, checkpoint: str, name: str) -> int:
    out = args.out or f"{checkpoint}/analysis/{name}"
    print(f"wrote {out}/{name}.json" + (f" and {out}/{name}.png" if args.plot else ""))
    return 0


def _run_grokking(args: argparse.Namespace) -> int:
    from hf_infonc.analysis.grokking import main as grokking_main

    return int(grokking_main(list(args.grokking_argv), prog="hf-infonc analyze grokking") or 0)


def _fmt(value: Any, width: int = 8) -> str:
    return f"{value:>{width}.4f}" if isinstance(value, (int, float)) and value == value else f"{'—':>{width}}"


def add_analyze_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``analyze {lmc,prune,grokking}`` on the ``hf-infonc`` sub-command parsers."""
    analyze = subparsers.add_parser("analyze", help="the paper's analyses: lmc, prune, grokking",
                                    description="The paper's analyses (docs/theory.md §5), one command each.")
    analyses = analyze.add_subparsers(dest="analysis", required=True)

    lmc = analyses.add_parser("lmc", help="linear mode connectivity of two checkpoints: accuracy, MIR, HDR along "
                              "(1-ω)θ_A + ωθ_B")
    lmc.add_argument("checkpoint_a", metavar="A", help="first run directory (ω = 0)")
    lmc.add_argument("checkpoint_b", metavar="B", help="second run directory (ω = 1)")
    lmc.add_argument("--points", type=int, default=11, help="number of ω values in [0, 1] (default: %(default)s)")
    _common(lmc, "lmc")
    lmc.set_defaults(func=_run_lmc)

    prune = analyses.add_parser("prune", help="global magnitude pruning: accuracy and MIR between the features "
                                "before and after")
    prune.add_argument("checkpoint", metavar="CKPT", help="run directory")
    prune.add_argument("--sparsity", default="0.5,0.9", help="comma-separated fractions of weights set to zero "
                       "(default: %(default)s)")
    prune.add_argument("--batch-size", type=int, default=64, help="samples per MIR batch (default: %(default)s, "
                       "as in the paper)")
    _common(prune, "prune")
    prune.set_defaults(func=_run_prune)

    # Every argument after `grokking` goes to hf_infonc.analysis.grokking.main (its own parser and
    # --help): a prefix character that never occurs keeps argparse from reading them here.
    grokking = analyses.add_parser("grokking", help="modular addition (a+b) mod 113: MIR and HDR through grokking "
                                   "(options: hf-infonc analyze grokking --help)", add_help=False, prefix_chars="+")
    grokking.add_argument("grokking_argv", nargs=argparse.REMAINDER)
    grokking.set_defaults(func=_run_grokking)
    return analyze
