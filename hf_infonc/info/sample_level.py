"""The paper's sample-level MIR / HDR, averaged over consecutive batches (docs/theory.md §2 item 2).

Batches are summed as float64 statistics (so partial sums merge exactly), then averaged. A batch whose
MIR (or HDR) is 0/0 is, with ``zero_entropy="skip"`` (default), left out of that ratio's average and
counted; with ``"nan"`` it makes the average NaN (warning); with ``"zero"`` it counts as 0.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch

from hf_infonc.info.gram import check_choice, check_count, check_tensor
from hf_infonc.info.mutual import information_measures
from hf_infonc.info.ranges import clamp_float, roundoff_slack

SampleZeroEntropy = Literal["skip", "nan", "zero"]
SAMPLE_ZERO_ENTROPY: tuple[str, ...] = ("skip", "nan", "zero")

#: The sample-level entropies are computed for at most this many rows (whole batches) at a time.
SAMPLE_GROUP_ROWS = 2048

#: Length of the statistics vector of :func:`pair_batch_stats`.
N_SAMPLE_STATS = 8


def pair_batch_stats(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Summed statistics of ``k`` sample batches: ``a`` ``(k, n, d₁)``, ``b`` ``(k, n, d₂)`` (rows
    paired by sample). Per batch, ``K₁ = G(a)``, ``K₂ = G(b)``, and the vector holds
    ``[k, Σ MIR, #MIR defined, Σ HDR, #HDR defined, Σ H(K₁), Σ H(K₂), Σ MI]`` (float64), the
    undefined (0/0) ratios contributing 0 to the sums.
    """
    terms, mi, mir_value, hdr_value = information_measures(a, b, "masked")  # ratios NaN where 0/0
    sums = [mir_value.nansum(), (~mir_value.isnan()).sum(), hdr_value.nansum(), (~hdr_value.isnan()).sum(),
            terms.h_a.sum(), terms.h_b.sum(), mi.sum()]
    return torch.stack([torch.full_like(sums[0], a.shape[0]), *sums]).to(torch.float64)


def summarize_batch_stats(stats: torch.Tensor, zero_entropy: str = "skip") -> dict[str, float]:
    """Batch averages from :func:`pair_batch_stats` sums: keys ``mir``, ``hdr``, ``mi``,
    ``feature_entropy`` (``H(K₁)``), ``head_entropy`` (``H(K₂)``), ``num_batches``,
    ``mir_undefined_batches``, ``hdr_undefined_batches``. ``zero_entropy`` as in the module doc.
    """
    check_choice(zero_entropy, "zero_entropy", SAMPLE_ZERO_ENTROPY)
    batches, mir_sum, mir_defined, hdr_sum, hdr_defined, h_a, h_b, mi = stats.tolist()
    out: dict[str, float] = {
        "num_batches": int(batches),
        "mir_undefined_batches": int(batches - mir_defined),
        "hdr_undefined_batches": int(batches - hdr_defined),
    }
    if batches == 0:
        return out
    out["feature_entropy"] = h_a / batches
    out["head_entropy"] = h_b / batches
    # each batch's MI is at most its smaller entropy, so the average is too, up to the summation's round-off
    upper = min(out["feature_entropy"], out["head_entropy"])
    out["mi"] = clamp_float(mi / batches, 0.0, upper, roundoff_slack(torch.float64, int(batches)))
    for key, total, defined in (("mir", mir_sum, mir_defined), ("hdr", hdr_sum, hdr_defined)):
        undefined = batches - defined
        if zero_entropy == "zero":
            out[key] = total / batches
        elif undefined and (zero_entropy == "nan" or defined == 0):
            warnings.warn(
                f"{key.upper()}: {int(undefined)} of {int(batches)} sample batches have a 0/0 ratio (a matrix entropy "
                f"is 0: all rows parallel, a single row, or C = 2 at collapse); returning NaN "
                f"(zero_entropy={zero_entropy!r}).",
                RuntimeWarning,
                stacklevel=3,
            )
            out[key] = math.nan
        else:
            out[key] = total / defined
    return out


def batched_mir_hdr(
    features: torch.Tensor, head_rows: torch.Tensor, *, batch_size: int = 64,
    zero_entropy: SampleZeroEntropy = "skip", drop_last: bool = False,
) -> dict[str, float]:
    """The paper's sample-level MIR/HDR (docs/theory.md §2 items 2 and 3), averaged over consecutive batches.

    Each batch of ``batch_size`` consecutive rows (the last one smaller unless ``drop_last``) compares
    ``G(features[batch])`` with ``G(head_rows[batch])`` (``W[labels]``, or a second model's features).
    Returns the keys of :func:`summarize_batch_stats`; 0/0 batches follow ``zero_entropy`` (module doc).
    """
    check_tensor(features, "features", shape=(None, None))
    check_tensor(head_rows, "head_rows", shape=(features.shape[0], None))
    batch_size = check_count(batch_size, "batch_size", 1)
    check_choice(zero_entropy, "zero_entropy", SAMPLE_ZERO_ENTROPY)
    return summarize_batch_stats(batch_stats(features, head_rows, batch_size, tail=not drop_last), zero_entropy)


def batch_stats(a: torch.Tensor, b: torch.Tensor, batch_size: int, *, tail: bool) -> torch.Tensor:
    """:func:`pair_batch_stats` summed over the batches of ``batch_size`` paired rows of ``a`` and ``b``
    (the leftover rows a last batch when ``tail``), about :data:`SAMPLE_GROUP_ROWS` rows at a time."""
    def group(x: torch.Tensor, rows: slice) -> torch.Tensor:
        return x[rows].detach().to(torch.float64).reshape(-1, min(batch_size, rows.stop - rows.start), x.shape[1])

    stats = torch.zeros(N_SAMPLE_STATS, dtype=torch.float64, device=a.device)
    n = a.shape[0]
    full = (n // batch_size) * batch_size
    step = max(1, SAMPLE_GROUP_ROWS // batch_size) * batch_size
    groups = [slice(start, min(full, start + step)) for start in range(0, full, step)]
    for rows in groups + ([slice(full, n)] if tail and full < n else []):
        stats += pair_batch_stats(group(a, rows), group(b, rows))
    return stats
