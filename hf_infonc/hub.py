"""Uploads of a run's output directory to the Hugging Face Hub (guide: docs/hub.md).

Only :data:`UPLOAD_ALLOW_PATTERNS` are uploaded, never pickled files or checkpoints. The token (argument,
``HF_TOKEN`` or the saved login) is never logged, printed or written, and is redacted from errors; offline or
unreachable, a push fails at once with a :class:`HubPushError` that says what to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_infonc.card import CARD_NAME, rerender_model_card
from hf_infonc.errors import UserError
from hf_infonc.files import write_atomic
from hf_infonc.offline import hub_offline, is_network_error
from hf_infonc.secrets import hub_token, known_secrets, redact_text

logger = logging.getLogger(__name__)

HUB_TIMEOUT_ENV = "HF_INFONC_HUB_TIMEOUT"
"""Seconds to wait for the Hub to answer ``create_repo`` before giving up (default 30)."""

#: Files uploaded by :func:`push_output_dir` (``fnmatch`` patterns on the path inside the folder): weights, configs
#: and tokenizer files (``*.json``, ``vocab.txt``, ``merges.txt``, sentencepiece's ``*.model``: protobuf, not
#: pickle), the card, plots and the recipe.
UPLOAD_ALLOW_PATTERNS: tuple[str, ...] = ("*.safetensors", "*.json", "*.md", "*.png", "*.txt", "*.yaml", "*.model",
                                          "*.tiktoken")
#: Suffixes of files that ``torch.load``/``pickle`` would read: never uploaded, never needed to load.
PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: Files never uploaded, even when an allow pattern matches.
UPLOAD_IGNORE_PATTERNS: tuple[str, ...] = (
    "checkpoint-*", "checkpoint-*/**", "runs/**", ".*", "**/.*", "_*",
    *(f"*{suffix}" for suffix in PICKLE_SUFFIXES), "*.npy", "*.npz", "training_args.*",
)
#: Pickled files the Trainer writes that are not weights (skipped quietly).
TRAINER_PICKLES = re.compile(r"^(training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth)$")


class HubPushError(UserError):
    """A push to the Hub that cannot be done (not a run's folder, offline, unreachable, no token, rejected)."""


class PushFolderNotFoundError(HubPushError, FileNotFoundError):
    """The folder to push does not exist (also a ``FileNotFoundError``)."""


@dataclass
class UploadPlan:
    """What :func:`push_output_dir` would upload from a folder, and what it leaves out."""

    files: list[str]
    skipped: list[str]


def plan_upload(output_dir: str | os.PathLike) -> UploadPlan:
    """The files of ``output_dir`` that match :data:`UPLOAD_ALLOW_PATTERNS` and no ignore pattern
    (the same filter ``HfApi.upload_folder`` applies)."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    folder = Path(output_dir)
    everything = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    ignore = [*UPLOAD_IGNORE_PATTERNS, *DEFAULT_IGNORE_PATTERNS]
    files = list(filter_repo_objects(everything, allow_patterns=list(UPLOAD_ALLOW_PATTERNS), ignore_patterns=ignore))
    return UploadPlan(files, [f for f in everything if f not in set(files)])


def check_output_dir(output_dir: str | os.PathLike) -> UploadPlan:
    """Check that a folder can be pushed: it holds safetensors weights and a card, and no pickled weights
    would stand in for them. Returns the upload plan."""
    folder = Path(output_dir)
    if not folder.is_dir():
        raise PushFolderNotFoundError(
            f"{folder}: no such directory. Give the output directory of a run (training.output_dir)."
        )
    plan = plan_upload(folder)
    pickled = [f for f in plan.skipped if "/" not in f and f.endswith(PICKLE_SUFFIXES) and not TRAINER_PICKLES.match(f)]
    if not any(f.endswith(".safetensors") for f in plan.files):
        hint = (
            f" It holds pickled weights ({', '.join(pickled)}), which are never uploaded: re-save the model with "
            f"model.save_pretrained(folder) (safetensors is the default)." if pickled else ""
        )
        raise HubPushError(
            f"{folder}: no *.safetensors weights to upload.{hint} A finished `hf-infonc finetune` run writes "
            f"model.safetensors (or adapter_model.safetensors for LoRA)."
        )
    if pickled:
        logger.warning("%s: not uploading pickled files %s (only safetensors weights are uploaded).", folder, pickled)
    if CARD_NAME not in plan.files:
        raise HubPushError(
            f"{folder}: no {CARD_NAME} (model card). Runs of `hf-infonc finetune` write one; otherwise call "
            f"hf_infonc.card.write_model_card(folder, recipe, results) first."
        )
    return plan


def _explain(error: BaseException, *, repo_id: str, endpoint: str, secrets: Sequence[str]) -> str:
    """The message of a failed push (offline mode is refused before any call: :func:`push_output_dir`)."""
    detail = redact_text(f"{type(error).__name__}: {error}", secrets)
    if is_network_error(error):
        return (
            f"Cannot push to {repo_id}: the Hugging Face Hub at {endpoint} cannot be reached ({detail}). Check the "
            f"network, proxy (HTTPS_PROXY) or HF_ENDPOINT, then run `hf-infonc push <output_dir> --repo-id {repo_id}` "
            f"again; the output directory is complete and can be pushed later."
        )
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return (
            f"The Hub refused the push to {repo_id} (HTTP {status}): the token is missing, invalid, or lacks write "
            f"access to this namespace. Create a write token at https://huggingface.co/settings/tokens, then "
            f"`hf auth login` (or set HF_TOKEN) and push again. ({detail})"
        )
    return f"Pushing to {repo_id} failed: {detail}"


def _call_with_timeout(fn, timeout: float, what: str):
    """Run ``fn()`` in a daemon thread; raise :class:`TimeoutError` when it has not returned after ``timeout`` s."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, name=f"hf_infonc-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{what} did not answer within {timeout:g} s (set {HUB_TIMEOUT_ENV} to wait longer)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def push_output_dir(
    output_dir: str | os.PathLike, *, repo_id: str, private: bool = False, token: str | None = None,
    commit_message: str = "Upload model fine-tuned with hf_infonc", revision: str | None = None,
    endpoint: str | None = None, update_card: bool = True, timeout: float | None = None,
) -> str:
    """Upload a run's output directory (:func:`plan_upload`'s files, through :func:`hub_file_set`) to the Hub
    model repo ``repo_id``; return the repo URL.

    Args:
        output_dir: a finished run's output directory.
        repo_id: ``user/name`` or ``org/name``; created if missing (``exist_ok``).
        private: create the repo private (no effect on an existing repo).
        token: a Hub token; default: ``HF_TOKEN`` or the saved login (``huggingface_hub.get_token``).
            Never logged or printed; redacted from error messages.
        update_card: first re-render ``README.md`` (from ``recipe.yaml`` and ``metrics.json``) so
            that its load snippets name ``repo_id``.
        endpoint: another Hub endpoint (default ``HF_ENDPOINT`` / huggingface.co).
        timeout: seconds to wait for the Hub to answer ``create_repo`` (default
            ``$HF_INFONC_HUB_TIMEOUT`` or 30).

    Raises:
        HubPushError: an invalid repo id, a folder that is not a pushable run (no safetensors weights, no card;
            :class:`PushFolderNotFoundError` when missing), offline (``HF_HUB_OFFLINE=1``), Hub unreachable,
            no token, or refused.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(output_dir)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubPushError(
            f"--repo-id {repo_id!r} is not a valid Hub repo id ('user/name' or 'org/name'): {error}"
        ) from None
    secrets = known_secrets([token])
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    plan = check_output_dir(folder)  # first: a folder that cannot be pushed is named as such, and left untouched
    if hub_offline():
        raise HubPushError(
            f"Cannot push {folder} to {repo_id}: HF_HUB_OFFLINE=1 is set, so the Hub cannot be reached. The output "
            f"directory is complete: on a machine with network access, run `HF_HUB_OFFLINE=0 hf-infonc push {folder} "
            f"--repo-id {repo_id}`."
        )
    token = token or hub_token()
    if not token:
        raise HubPushError(
            f"Cannot push to {repo_id}: no Hugging Face token. Log in with `hf auth login` (or "
            f"`huggingface-cli login`), set HF_TOKEN, or pass --token; the token needs write access."
        )
    card = folder / CARD_NAME
    old_card = card.read_bytes() if update_card and card.is_file() else None
    if update_card:  # the same files: README.md is rewritten in place, and put back if the push fails
        rerender_model_card(folder, repo_id, secrets)
    secrets = known_secrets([token, *secrets])
    timeout = float(timeout if timeout is not None else os.environ.get(HUB_TIMEOUT_ENV, 30))
    api = HfApi(endpoint=endpoint, token=token)
    logger.info(
        "Pushing %d files from %s to %s (%s): %s", len(plan.files), folder, repo_id,
        "private" if private else "public", ", ".join(plan.files),
    )
    try:
        repo_url = _call_with_timeout(
            lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"), timeout, "create_repo"
        )
        with hub_file_set(folder, repo_id, plan.files) as upload_folder:
            api.upload_folder(
                repo_id=repo_id, folder_path=str(upload_folder), repo_type="model", commit_message=commit_message,
                revision=revision, allow_patterns=list(UPLOAD_ALLOW_PATTERNS),
                ignore_patterns=list(UPLOAD_IGNORE_PATTERNS),
            )
    except BaseException as error:
        if old_card is not None:
            write_atomic(card, old_card)
        if not isinstance(error, Exception):  # Ctrl-C
            raise
        raise HubPushError(_explain(error, repo_id=repo_id, endpoint=endpoint, secrets=secrets)) from None
    url = str(repo_url) if repo_url else f"{endpoint}/{repo_id}"
    logger.info("Pushed %s to %s", folder, url)
    return url


@contextlib.contextmanager
def hub_file_set(output_dir: str | os.PathLike, repo_id: str, files: Sequence[str] | None = None) -> Iterator[Path]:
    """The folder whose files make the Hub repo ``repo_id`` (use it around any upload of a run's folder):
    ``output_dir`` itself, or, for a LoRA adapter whose base model is saved in the same folder (see
    :mod:`hf_infonc.modes`), a staged copy of hard links to ``files`` (default: :func:`plan_upload`'s) whose
    ``adapter_config.json`` names ``repo_id`` as the base; the output folder itself still loads offline."""
    folder = Path(output_dir)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    base = config.get("base_model_name_or_path")
    local_base = Path(base) if base and Path(base).is_dir() else None
    if local_base is None or local_base.resolve() != folder.resolve():
        if local_base is not None:
            logger.warning(
                "%s: adapter_config.json names the local folder %s as its base model, which is not uploaded; loading "
                "the pushed adapter will need that folder.", folder, base,
            )
        yield folder
        return
    files = list(plan_upload(folder).files if files is None else files)
    try:
        staging = tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.hub-")
    except OSError:  # a read-only parent: copies in the system's temporary folder
        staging = tempfile.TemporaryDirectory(prefix="hf_infonc-hub-")
    with staging as staged:
        for name in files:
            target = Path(staged) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(folder / name, target)
            except OSError:
                shutil.copyfile(folder / name, target)
        rewritten = Path(staged) / "adapter_config.json"
        rewritten.unlink(missing_ok=True)  # a hard link: writing through it would change the output folder's file
        rewritten.write_text(json.dumps(dict(config, base_model_name_or_path=repo_id), indent=2, sort_keys=True) + "\n")
        yield Path(staged)


@contextlib.contextmanager
def hub_uploads() -> Iterator[None]:
    """Within the block, ``Trainer``'s uploads (``transformers.trainer.hf_api().upload_folder``) skip pickled
    files and go through :func:`hub_file_set`; a staged upload runs to completion before it returns (a finished
    future when one was asked for)."""
    import transformers.trainer as transformers_trainer

    make_api = transformers_trainer.hf_api
    pickles = [f"*{suffix}" for suffix in PICKLE_SUFFIXES]  # files that torch.load / pickle would read

    class HubApi:
        def __init__(self) -> None:
            self._api = make_api()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._api, name)

        def upload_folder(self, *, repo_id: str, folder_path: str, ignore_patterns: Any = None, **kwargs: Any) -> Any:
            patterns = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
            kwargs["ignore_patterns"] = [*patterns, *pickles]
            with hub_file_set(folder_path, repo_id) as folder:
                if Path(folder) == Path(folder_path):
                    return self._api.upload_folder(repo_id=repo_id, folder_path=folder_path, **kwargs)
                future = kwargs.pop("run_as_future", False)
                result = self._api.upload_folder(repo_id=repo_id, folder_path=str(folder), **kwargs)
            if not future:
                return result
            done: Future = Future()
            done.set_result(result)
            return done

    transformers_trainer.hf_api = HubApi
    try:
        yield
    finally:
        transformers_trainer.hf_api = make_api


__all__ = [
    "HubPushError", "PICKLE_SUFFIXES", "PushFolderNotFoundError", "UPLOAD_ALLOW_PATTERNS", "UPLOAD_IGNORE_PATTERNS",
    "UploadPlan",
    "check_output_dir", "hub_file_set", "hub_uploads", "plan_upload", "push_output_dir",
]
