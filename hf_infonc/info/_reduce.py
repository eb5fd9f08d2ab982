"""Sums over processes for the accumulators of :mod:`hf_infonc.info.stream` (``torch.distributed``).

Only sums are reduced (exact up to the summation order), after every rank has checked that all hold
the same configuration, so a mismatch raises everywhere instead of hanging.
"""

from __future__ import annotations

import torch


def distributed_ready() -> bool:
    """Whether a ``torch.distributed`` process group is initialised."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def all_reduce(vector: torch.Tensor, group: object, op: str = "SUM") -> torch.Tensor:
    """``vector`` reduced over ``group`` (``op``: "SUM", "MAX" or "MIN"), on ``vector``'s device; the
    reduction runs on the group's device (CUDA for NCCL, else the CPU)."""
    import torch.distributed as dist

    nccl = "nccl" in str(dist.get_backend(group)).lower()
    buf = vector.to(torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu"), copy=True)
    dist.all_reduce(buf, op=getattr(dist.ReduceOp, op), group=group)
    return buf.to(vector.device)


def check_same_everywhere(signature: torch.Tensor, what: str, group: object) -> None:
    """Raise on every rank (no hang) when ranks disagree on a configuration signature."""
    if not torch.equal(all_reduce(signature, group, "MAX"), all_reduce(signature, group, "MIN")):
        raise ValueError(
            f"all_reduce: the processes disagree on the {what} (num_classes, dim, sample batch size, head, "
            f"centres, ...). Build the accumulator with the same arguments on every rank."
        )


def signature(*parts: int | float | torch.Tensor | None) -> torch.Tensor:
    """A float64 summary of a configuration: numbers as they are, optional tensors as ``[given, Σ x, Σ |x|]``
    (NaN counted as 0)."""
    values: list[float] = []
    for part in parts:
        if part is None:
            values += [0.0, 0.0, 0.0]
        elif isinstance(part, torch.Tensor):
            y = torch.nan_to_num(part.to(torch.float64), nan=0.0)
            values += [1.0, float(y.sum()), float(y.abs().sum())]
        else:
            values.append(float(part))
    return torch.tensor(values, dtype=torch.float64)


def same_optional(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Whether two optional tensors are both ``None`` or equal (NaN equal to NaN)."""
    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape:
        return False
    return bool(torch.equal(torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b.to(a.device), nan=0.0)))
