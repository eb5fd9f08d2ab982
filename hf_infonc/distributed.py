"""Gathering rows from every process, with gradients, so that a batch-Gram loss sees the global batch.

In backward the incoming gradients are summed over processes and each process keeps the slice of
its own rows: every process computes the same ``L(X_all)``, so the sum is ``P·∂L/∂X_r`` and DDP's
average over processes gives the single-process gradient on the concatenated batch (the construction
of ``torch.distributed.nn.functional.all_gather`` and of open_clip's ClipLoss).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        size = torch.tensor([local.shape[0]], device=local.device, dtype=torch.long)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        counts = [int(s.item()) for s in sizes]
        longest = max(counts)
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: local.shape[0]] = local
        buffers = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(buffers, padded.contiguous())
        ctx.counts = counts
        ctx.rank = dist.get_rank()
        return torch.cat([buf[:count] for buf, count in zip(buffers, counts)], dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.counts[: ctx.rank])
        return grad[start : start + ctx.counts[ctx.rank]]


def all_gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate ``local`` (rows = samples, any count per process) from all processes, keeping gradients;
    ``local`` itself when not running distributed."""
    if not is_distributed():
        return local
    return _AllGatherRows.apply(local)


def all_gather_no_grad(local: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather_with_grad` for tensors that need no gradient (labels)."""
    if not is_distributed():
        return local
    with torch.no_grad():
        return _AllGatherRows.apply(local.detach())
