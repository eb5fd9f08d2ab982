"""Gathering rows from every process, with gradients, so that a batch-Gram loss sees the global batch.

Backward sums the gradients over processes (each computes the same ``L(X_all)``: ``P·∂L/∂X_r``) and keeps this
process's rows, so DDP's average is the single-process gradient on the concatenated batch (docs/distributed.md).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        size = torch.tensor([local.shape[0]], device=local.device, dtype=torch.long)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        counts = [int(s.item()) for s in sizes]
        padded = local.new_zeros((max(counts), *local.shape[1:]))
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
    ``local`` itself when no process group of more than one process is initialised."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return local
    return _AllGatherRows.apply(local)


def all_gather_no_grad(local: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather_with_grad` for tensors that need no gradient (labels)."""
    return all_gather_with_grad(local.detach())
