"""Worker for tests/test_stream.py::test_all_reduce_two_processes (run by torchrun, gloo, CPU).

Usage: torchrun --standalone --nproc_per_node 2 stream_worker.py DATA.pt OUT_DIR

Each rank takes its shard of the saved data (rank 0: rows [0, split), rank 1: rows [split, N)),
accumulates it in uneven mini-batches, all-reduces, runs the NC4 second pass, all-reduces again
and writes its results to OUT_DIR/rank{r}.json. A second accumulator without a head uses an
uneven split (rows [0, uneven_split) / [uneven_split, N)) for the class-level measures.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from hf_infonc.info.stream import NeuralCollapseAccumulator


def feed(acc, features, labels, sizes=(50, 13, 77)):
    start, i = 0, 0
    while start < features.shape[0]:
        stop = min(features.shape[0], start + sizes[i % len(sizes)])
        acc.update(features[start:stop], labels[start:stop])
        start, i = stop, i + 1


def main() -> None:
    data_path, out_dir = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        assert world == 2, world
        data = torch.load(data_path)
        x, y, head = data["features"], data["labels"], data["head"]
        num_classes = head.shape[0]

        split = data["split"]
        lo, hi = (0, split) if rank == 0 else (split, x.shape[0])
        acc = NeuralCollapseAccumulator(num_classes, x.shape[1], head=head, sample_batch_size=data["batch"])
        feed(acc, x[lo:hi], y[lo:hi])
        acc.all_reduce()
        agreement = acc.nearest_center_pass()
        feed(agreement, x[lo:hi], y[lo:hi])
        agreement.all_reduce()
        result = {**acc.compute(), **agreement.compute()}

        uneven = data["uneven_split"]
        lo, hi = (0, uneven) if rank == 0 else (uneven, x.shape[0])
        plain = NeuralCollapseAccumulator(num_classes, x.shape[1])
        feed(plain, x[lo:hi], y[lo:hi])
        plain.all_reduce()
        result_plain = plain.compute()

        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump({"with_head": result, "plain": result_plain}, fh)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
