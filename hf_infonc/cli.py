"""The ``hf-infonc`` command line: ``finetune``, ``check``, ``collapse``, ``analyze``, ``compare`` and ``push``.

``scripts/finetune.py RECIPE`` is ``hf-infonc finetune RECIPE`` (for ``accelerate launch`` and ``torchrun``).
A :class:`hf_infonc.errors.UserError` prints one line ``error: …`` (secrets redacted) and exits 2; Ctrl-C exits
130, SIGTERM 143; a reader that closes the output early (``hf-infonc check R | head -1``) ends the command
quietly with 141, the status a shell reports for SIGPIPE (docs/recipes.md, "Errors"). ``--debug`` (or
``HF_INFONC_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

DEBUG_ENV = "HF_INFONC_DEBUG"
"""Set to 1 to show the traceback of user errors and interruptions (as ``--debug`` does)."""


def _add_recipe_arguments(parser: argparse.ArgumentParser, example: str = "training.learning_rate=3e-5",
                          every_run: str = "") -> None:
    parser.add_argument("recipe", help="path of a YAML recipe (see recipes/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a recipe value{every_run}, e.g. --set {example} (repeatable)")
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
    from hf_infonc.runs import holds_run
    from hf_infonc.preflight import check_recipe
    from hf_infonc.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    args.secrets = recipe.secrets()
    check_recipe(recipe)  # numbers, precision against this machine, arguments, data files, output folder
    from hf_infonc.secrets import redact_text

    model = recipe.model
    print(redact_text(f"{args.recipe}: valid ({model.family}, mode {model.training_mode}, data {recipe.data.source})",
                      args.secrets))
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


def _cmd_compare(args: argparse.Namespace) -> int:
    from hf_infonc.compare import compare, render_markdown

    started = time.perf_counter()
    document = compare(args.recipe, args.variants, args.seeds, args.out, overrides=args.overrides, jobs=args.jobs,
                       dry_run=args.dry_run, plot=not args.no_plot)
    if args.dry_run:
        return 0
    out = Path(args.out)
    print()
    print(render_markdown(document))
    print(f"Total wall time: {(time.perf_counter() - started) / 60:.1f} min. Wrote {out / 'comparison.json'}, "
          f"{out / 'comparison.md'}" + ("" if args.no_plot else f" and {out / 'comparison.png'}") + ".")
    failed = [r for r in document["runs"] if r["status"] != "finished"]
    if failed:
        print(f"{len(failed)} run(s) failed; see 'Failed runs' in the table. The same command runs them again "
              "(finished runs are kept).", file=sys.stderr)
        return 1
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
                      "the new run has written all its outputs; put back if it fails or is interrupted before)")
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

    add_analyze_parser(commands)
    compare = commands.add_parser(
        "compare",
        help="run a recipe as variants × seeds; paired differences with CIs and p-values",
        description="Run a recipe under several settings (variants) × seeds, each as `hf-infonc finetune` in its "
                    "own process, and compare every variant with the first (the baseline), seed by seed: mean ± sd, "
                    "paired mean difference, 95% CI, p-value of a paired t-test, and whether the difference is "
                    "distinguishable from seed noise. See docs/ablations.md.",
        epilog="example:\n  hf-infonc compare recipes/demo.yaml --seeds 0-4 --jobs 2 --out /tmp/ablation \\\n"
               "      --variant ce:training.cma_weight=0,training.mi_weight=0 --variant cma:training.mi_weight=0\n\n"
               "A value holding a comma must be quoted or bracketed as YAML (data.class_names=[a, b]), or given in a\n"
               "second --variant with the same name. Finished runs are kept when the command is run again.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_recipe_arguments(compare, "training.num_train_epochs=4", " in every run")
    compare.add_argument("--variant", dest="variants", action="append", required=True, metavar="NAME[:KEY=VALUE,...]",
                         help="a named set of recipe overrides (dotted keys, YAML values, as --set); the first is the "
                              "baseline; NAME alone runs the recipe as it is (repeatable)")
    compare.add_argument("--seeds", nargs="+", default=["0-4"], metavar="SEEDS",
                         help="training seeds: 0-4, 0,1,2 or 0 1 2 (default: 0-4)")
    compare.add_argument("--jobs", type=int, default=None,
                         help="runs in parallel (default: one per GPU where there are several, else 1); each gets "
                              "cores // jobs CPU threads")
    compare.add_argument("--out", required=True, help="folder for the runs and comparison.{json,md,png}")
    compare.add_argument("--dry-run", action="store_true", help="validate and print the runs' commands; run nothing")
    compare.add_argument("--no-plot", action="store_true", help="skip comparison.png")
    compare.set_defaults(func=_cmd_compare)
    return parser


def _resume_command(args: argparse.Namespace) -> str:
    """The command line that continues an interrupted ``finetune``; secret overrides (a token) are left out
    and named, to be given again (a redacted value would be taken literally)."""
    from hf_infonc.recipe import is_secret_override

    secret = [item for item in args.overrides if is_secret_override(item)]
    kept = [w for item in args.overrides if item not in secret for w in ("--set", item)]
    command = shlex.join(["hf-infonc", "finetune", args.recipe, *kept, "--resume"])
    if secret:
        keys = ", ".join(item.split("=", 1)[0] for item in secret)
        command += f" (and --set {keys} again)"
    return command


def _report(line: str, error: BaseException, args: argparse.Namespace, debug: bool, status: int) -> int:
    """Print ``line`` (secrets redacted) on stderr, after the traceback when debugging; return ``status``."""
    from hf_infonc.secrets import redact_text

    if debug:
        traceback.print_exception(error)
    print(redact_text(line, [*getattr(args, "secrets", []), getattr(args, "token", None)]), file=sys.stderr)
    return status


STDOUT_CLOSED_STATUS = 141
"""Exit status when the reader of stdout went away: 128 + SIGPIPE, what a shell reports for a killed writer."""


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end was closed (``poll`` reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or no file descriptor (stdout replaced)
        return False


def _stdout_closed() -> int:
    """Point stdout at the null device, so that the flush at exit does not fail again (CPython's note on SIGPIPE)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):  # no file descriptor (stdout replaced in-process)
        pass
    return STDOUT_CLOSED_STATUS


class _SigtermAsInterrupt:
    """While the command runs, SIGTERM (``timeout``, SLURM, ``kill``) takes Ctrl-C's path: it raises
    ``KeyboardInterrupt`` once (a second signal cannot cut the clean-up short) and the command exits 143."""

    def __init__(self) -> None:
        self.status, self.previous = 130, None

    def _handle(self, signum: int, frame: object) -> None:
        if self.status == 130:
            self.status = 128 + signum
            raise KeyboardInterrupt

    def __enter__(self) -> _SigtermAsInterrupt:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def main(argv: Sequence[str] | None = None) -> int:
    from hf_infonc.errors import TrainingInterrupted, UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    terminate = _SigtermAsInterrupt()
    try:
        with terminate:
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not in the flush at exit
        return code
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # another pipe or socket: not the reader of the output
        return _stdout_closed()
    except UserError as error:
        return _report(f"error: {error}", error, args, debug, 2)
    except KeyboardInterrupt as interrupt:
        line = interrupt.message if isinstance(interrupt, TrainingInterrupted) else "interrupted."
        resumable = isinstance(interrupt, TrainingInterrupted) and interrupt.resume_from is not None
        if resumable and args.command == "finetune":
            line += f" Continue with: {_resume_command(args)}"
        return _report(line, interrupt, args, debug, terminate.status)
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
