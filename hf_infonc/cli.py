"""The ``hf-infonc`` command line.

Subcommands::

    hf-infonc finetune RECIPE [--set k=v ...] [--resume | --overwrite] [--eval-only]
    hf-infonc check RECIPE [--set k=v ...]        # validate a recipe, print it resolved
    hf-infonc collapse [--classes 3 4 10 100]       # closed-form vs measured values at collapse
    hf-infonc analyze {grokking,lmc,prune} ...      # the paper's analyses
    hf-infonc compare RECIPE --variant NAME:k=v,... --seeds 0-4 --out DIR   # variants × seeds, paired tests
    hf-infonc push OUTPUT_DIR --repo-id NAME [--private]

``scripts/finetune.py RECIPE`` is ``hf-infonc finetune RECIPE`` (for ``accelerate launch`` and ``torchrun``).
A :class:`hf_infonc.errors.UserError` prints one line ``error: …`` (secrets redacted) and exits 2; Ctrl-C exits
130 (docs/recipes.md, "Errors"). ``--debug`` (or ``HF_INFONC_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
import traceback
from collections.abc import Sequence

DEBUG_ENV = "HF_INFONC_DEBUG"
"""Set to 1 to show the traceback of user errors and interruptions (as ``--debug`` does)."""


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path of a YAML recipe (see recipes/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set training.learning_rate=3e-5 (repeatable)")
    _add_debug(parser, argparse.SUPPRESS)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from hf_infonc.finetune import run_recipe
    from hf_infonc.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    args.secrets = recipe.secrets()
    run_recipe(recipe, resume=args.resume, overwrite=args.overwrite, eval_only=args.eval_only)
    from accelerate import PartialState

    # the command's process ends here: leave the process group cleanly (gloo processes can otherwise abort at
    # exit, after a successful run, with "terminate called without an active exception")
    PartialState().destroy_process_group()
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_infonc.runs import holds_run
    from hf_infonc.preflight import check_recipe
    from hf_infonc.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    args.secrets = recipe.secrets()
    check_recipe(recipe)  # numbers, precision against this machine, arguments, data files, output folder
    print(f"{args.recipe}: valid ({recipe.model.family}, mode {recipe.model.training_mode}, data {recipe.data.source})")
    if holds_run(Path(recipe.output_dir)):
        print(
            f"note: {recipe.output_dir} already holds a run: `hf-infonc finetune` needs --resume (continue it) or "
            f"--overwrite (replace it); --eval-only evaluates its model."
        )
    print(recipe.to_yaml())  # secrets redacted
    return 0


def _cmd_collapse(args: argparse.Namespace) -> int:
    from hf_infonc.collapse_demo import print_collapse_table

    print_collapse_table(args.classes, seed=args.seed)
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from hf_infonc.hub import push_output_dir

    url = push_output_dir(args.output_dir, repo_id=args.repo_id, private=args.private, token=args.token)
    print(f"Pushed {args.output_dir} to {url}")
    return 0


def _add_debug(parser: argparse.ArgumentParser, default: object = False) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help=f"show the traceback of errors (or set {DEBUG_ENV}=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-infonc", description=__doc__.split("\n\n")[0])
    _add_debug(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    finetune = commands.add_parser("finetune", help="fine-tune a model from a YAML recipe")
    _add_recipe_arguments(finetune)
    mode = finetune.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue from the last complete checkpoint in the output directory")
    mode.add_argument("--overwrite", action="store_true", help="replace a run in the output directory (kept until "
                      "the new run has trained a step; put back if it fails before)")
    mode.add_argument("--eval-only", action="store_true", help="evaluate without training: the model saved in the "
                      "output directory (writes eval_metrics.json, changes nothing else), or the recipe's model when "
                      "the directory holds no run (writes metrics.json)")
    finetune.set_defaults(func=_cmd_finetune)

    check = commands.add_parser("check", help="validate a recipe against this machine (numbers, precision, data "
                                "files, output folder) and print it")
    _add_recipe_arguments(check)
    check.set_defaults(func=_cmd_check)

    collapse = commands.add_parser("collapse", help="closed-form vs measured H, MI, MIR, HDR at neural collapse "
                                   "(docs/theory.md §3)")
    collapse.add_argument("--classes", type=int, nargs="+", default=[3, 4, 10, 100], help="numbers of classes C")
    collapse.add_argument("--seed", type=int, default=0, help="seed of the sampled features")
    collapse.set_defaults(func=_cmd_collapse)

    push = commands.add_parser("push", help="upload a run's output directory to the Hugging Face Hub")
    push.add_argument("output_dir")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", default=None, help="a Hub token (default: HF_TOKEN or the saved login)")
    push.set_defaults(func=_cmd_push)

    from hf_infonc.analysis.cli import add_analyze_parser
    from hf_infonc.compare import add_compare_parser

    add_analyze_parser(commands)
    add_compare_parser(commands)
    return parser


def _redacted(text: str, args: argparse.Namespace) -> str:
    from hf_infonc.secrets import redact_text

    return redact_text(text, [*getattr(args, "secrets", []), getattr(args, "token", None)])


def _resume_command(args: argparse.Namespace) -> str:
    """The command line that continues an interrupted ``finetune``; secret overrides (a token) are left out
    and named, to be given again (a redacted value would be taken literally)."""
    from hf_infonc.secrets import is_secret_key

    secret = [item for item in args.overrides if is_secret_key(item.split("=", 1)[0].split(".")[-1])]
    kept = [w for item in args.overrides if item not in secret for w in ("--set", item)]
    command = " ".join(shlex.quote(w) for w in ["hf-infonc", "finetune", args.recipe, *kept, "--resume"])
    if secret:
        keys = ", ".join(item.split("=", 1)[0] for item in secret)
        command += f" (and --set {keys} again)"
    return command


def _report(line: str, error: BaseException, args: argparse.Namespace, debug: bool, status: int) -> int:
    """Print ``line`` (secrets redacted) on stderr, after the traceback when debugging; return ``status``."""
    if debug:
        traceback.print_exception(error)
    print(_redacted(line, args), file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    from hf_infonc.errors import TrainingInterrupted, UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        return _report(f"error: {error}", error, args, debug, 2)
    except KeyboardInterrupt as interrupt:
        line = interrupt.message if isinstance(interrupt, TrainingInterrupted) else "interrupted."
        resumable = isinstance(interrupt, TrainingInterrupted) and interrupt.resume_from is not None
        if resumable and args.command == "finetune":
            line += f" Continue with: {_resume_command(args)}"
        return _report(line, interrupt, args, debug, 130)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        where = f" while writing {error.filename}" if error.filename else ""
        line = (
            f"error: {error.strerror}{where}. Free some space or choose another output folder "
            f"(--set training.output_dir=PATH); a run with checkpoints continues with --resume."
        )
        return _report(line, error, args, debug, 2)


if __name__ == "__main__":
    sys.exit(main())
