"""Independent float64 references (numpy + scipy) for the tests of ``hf_infonc.info``.

Nothing here imports hf_infonc: the tests compare the library against these.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


def ref_gram(z: torch.Tensor | np.ndarray, center: bool = False) -> np.ndarray:
    """Cosine Gram in float64; zero rows stay zero."""
    z = np.asarray(z, dtype=np.float64)
    if center:
        z = z - z.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    zn = z / np.where(norms > 0, norms, 1.0)
    return zn @ zn.T


def ref_spectrum(k: np.ndarray) -> np.ndarray:
    """Trace-normalised eigenvalues; round-off eigenvalues (< 1e-10) are exact zeros."""
    lam = scipy.linalg.eigvalsh(k) / np.trace(k)
    return lam[lam > 1e-10]


def ref_entropy(k: np.ndarray, alpha: float = 1.0) -> float:
    """Von Neumann (alpha = 1) or Rényi entropy of a PSD matrix, in nats."""
    lam = ref_spectrum(np.asarray(k, dtype=np.float64))
    if alpha == 1.0:
        return float(-(lam * np.log(lam)).sum())
    return float(np.log((lam**alpha).sum()) / (1.0 - alpha))
