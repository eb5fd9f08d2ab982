"""The ``hf-infonc`` command line.

Subcommands::

    hf-infonc finetune RECIPE [--set k=v ...] [--resume | --overwrite] [--eval-only]
    hf-infonc check RECIPE [--set k=v ...]        # validate a recipe, print it resolved
    hf-infonc collapse [--classes 3 4 10 100]       # closed-form vs measured values at collapse
    hf-infonc analyze {grokking,lmc,prune} ...      # the paper's analyses
    hf-infonc push OUTPUT_DIR --repo-id NAME [--private]

``scripts/finetune.py RECIPE`` is the same as ``hf-infonc finetune RECIPE`` and works under
``python``, ``accelerate launch`` and ``torchrun``. Heavy libraries are imported only by the
subcommand that needs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path of a YAML recipe (see recipes/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set training.learning_rate=3e-5 (repeatable)",
    )


def _cmd_finetune(args: argparse.Namespace) -> int:
    from hf_infonc.finetune import run_recipe
    from hf_infonc.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    run_recipe(recipe, resume=args.resume, overwrite=args.overwrite, eval_only=args.eval_only)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from hf_infonc.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    print(f"{args.recipe}: valid ({recipe.model.family}, mode {recipe.model.training_mode}, data {recipe.data.source})")
    print(recipe.to_yaml())
    return 0


def _cmd_collapse(args: argparse.Namespace) -> int:
    from hf_infonc.collapse_demo import print_collapse_table

    print_collapse_table(args.classes, seed=args.seed)
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from hf_infonc.card import push_output_dir

    url = push_output_dir(args.output_dir, repo_id=args.repo_id, private=args.private, token=args.token)
    print(f"Pushed {args.output_dir} to {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-infonc", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    finetune = commands.add_parser("finetune", help="fine-tune a model from a YAML recipe")
    _add_recipe_arguments(finetune)
    mode = finetune.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="resume from the last checkpoint in the output directory")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run in the output directory")
    finetune.add_argument("--eval-only", action="store_true", help="evaluate the model (and write metrics.json) without training")
    finetune.set_defaults(func=_cmd_finetune)

    check = commands.add_parser("check", help="validate a recipe and print it")
    _add_recipe_arguments(check)
    check.set_defaults(func=_cmd_check)

    collapse = commands.add_parser("collapse", help="closed-form vs measured H, MI, MIR, HDR at neural collapse")
    collapse.add_argument("--classes", type=int, nargs="+", default=[3, 4, 10, 100])
    collapse.add_argument("--seed", type=int, default=0)
    collapse.set_defaults(func=_cmd_collapse)

    push = commands.add_parser("push", help="upload a run's output directory to the Hugging Face Hub")
    push.add_argument("output_dir")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", default=None, help="a Hub token (default: HF_TOKEN or the saved login)")
    push.set_defaults(func=_cmd_push)

    try:
        from hf_infonc.analysis.cli import add_analyze_parser
    except ImportError:  # pragma: no cover - the analysis package is optional at import time
        pass
    else:
        add_analyze_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as error:
        if not _is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


def _is_user_error(error: Exception) -> bool:
    """Errors that describe a problem with the user's input: print the message, no traceback."""
    from hf_infonc.recipe import RecipeError

    names = {"ModelUnavailableError", "DatasetUnavailableError", "HubPushError"}
    return isinstance(error, RecipeError) or type(error).__name__ in names


if __name__ == "__main__":
    sys.exit(main())
