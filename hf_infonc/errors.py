"""User errors: one base class, caught by type by the command line.

A :class:`UserError` is a problem with what the user gave (the recipe, the data, the output folder, the
environment), not a bug: its message says what is wrong, names the offending key, file or value, and says how to
fix it. ``hf-infonc`` prints it as one line ``error: …`` (secrets redacted) and exits with status 2; ``--debug``
(or ``HF_INFONC_DEBUG=1``) shows the traceback as well. Besides the classes below, the subclasses are
:class:`hf_infonc.recipe.RecipeError` (recipe keys, values, combinations, training numbers, precision against the
hardware), :class:`hf_infonc.factory.ModelUnavailableError` (a model that needs the Hub while offline),
:class:`hf_infonc.data.DatasetUnavailableError` (a data set that needs the Hub or a package),
:class:`hf_infonc.hub.HubPushError` (a push that cannot be done) and
:class:`hf_infonc.analysis.common.AnalysisError` (the inputs of ``hf-infonc analyze``).

This module imports nothing else of the package, so every layer can use it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DataError", "DataFileNotFoundError", "OutputDirError", "TrainingInterrupted", "UserError"]


class UserError(ValueError):
    """A problem with the user's input; the message says what, where, and how to fix it."""


class DataError(UserError):
    """Data that cannot be used: a missing or empty file, a missing column, bad labels, texts or images."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file or folder named by the recipe that does not exist (also a ``FileNotFoundError``)."""


class OutputDirError(UserError):
    """An output folder that cannot be used as asked (a file, not writable, holds a run, nothing to resume)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``run_recipe``; the message says where the run stands.

    Attributes:
        resume_from: the last complete ``checkpoint-N`` folder when ``--resume`` can continue the run, else ``None``.
    """

    def __init__(self, message: str, *, resume_from: str | Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.resume_from = None if resume_from is None else Path(resume_from)
