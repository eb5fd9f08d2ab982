"""Speed and memory of the one-pass neural-collapse accumulator against two baselines.

Synthetic features (default N = 100,000, d = 512, C = 100), generated chunk by chunk from a
seeded generator (chunk k uses seed + k, so every pass sees the same data):

(a)  one pass: ``hf_infonc.info.stream.NeuralCollapseAccumulator`` (float64 counts, class sums and
     Σ x xᵀ; Σ_W derived at the end). "(a+)" adds a head, so the batch-averaged sample-level
     MIR/HDR (batches of 64) is computed on the fly as well (no baseline: reported alone).
(b)  two passes in the manner of rhubarbwu/neural-collapse (MeanAccumulator, then
     CovarAccumulator): pass 1 class sums → means; pass 2 Σ (x − μ_y)(x − μ_y)ᵀ; NC1 from
     ``torch.linalg.pinv(Σ_B)``. Run in float64 here, like (a) (the library defaults to float32).
(c)  naive: materialise the whole feature matrix, then ``torch.cov`` per class.

Every method ends with NC1; the values are printed and must agree (relative difference shown).

Timing: ``time.perf_counter`` around the measure's own work only, the fastest of ``--repeat``
runs (default 3; the machine may be shared); generating the synthetic chunks is excluded (in real use a pass is a forward pass over the data set, so (b)'s second pass costs a
whole extra inference epoch, which no number here shows; "passes" says how many are needed).

Memory: each method runs in a fresh subprocess; the peak is the kernel's resident-set high-water
mark (``VmHWM`` of /proc/self/status, i.e. ``ru_maxrss``), reported as the delta over the RSS
just before the method starts (after imports and warm-up). It includes the generated chunks
(row "(0)" shows that floor) and what the C allocator keeps after ``free``. tracemalloc is not
used: it only sees Python's allocator, not torch's tensor storage.

Usage:
    .venv/bin/python benchmarks/bench_metrics.py            # N=100k, d=512, C=100
    .venv/bin/python benchmarks/bench_metrics.py --quick    # N=10k, d=128, C=10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone

import torch

from hf_infonc.info import neural_collapse as nc
from hf_infonc.info.stream import NeuralCollapseAccumulator

METHODS = {
    "gen": "(0) data generation only (memory floor)",
    "a": "(a) one pass (hf_infonc accumulator)",
    "a+": "(a+) one pass + sample MIR/HDR (head)",
    "b": "(b) two passes (rhubarbwu style)",
    "c": "(c) naive: full matrix + torch.cov per class",
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Data:
    """Chunks of (features float32, labels int64), identical on every pass."""

    def __init__(self, n: int, d: int, c: int, chunk: int, seed: int) -> None:
        self.n, self.d, self.c, self.chunk, self.seed = n, d, c, chunk, seed
        g = torch.Generator().manual_seed(seed)
        self.centres = 2.0 * torch.randn(c, d, generator=g)
        self.head = torch.randn(c, d, generator=g, dtype=torch.float64)

    def chunks(self):
        for k, start in enumerate(range(0, self.n, self.chunk)):
            m = min(self.chunk, self.n - start)
            g = torch.Generator().manual_seed(self.seed + 1 + k)
            y = torch.randint(0, self.c, (m,), generator=g)
            x = self.centres[y] + torch.randn(m, self.d, generator=g)
            yield x, y


def nc1_from(sigma_w: torch.Tensor, means: torch.Tensor) -> float:
    return nc.nc1(sigma_w, means - means.mean(dim=0))


def run_gen(data: Data) -> tuple[float, float]:
    for x, y in data.chunks():
        pass
    return 0.0, float("nan")


def run_a(data: Data, with_head: bool) -> tuple[float, float]:
    acc = NeuralCollapseAccumulator(data.c, data.d, head=data.head if with_head else None)
    busy = 0.0
    for x, y in data.chunks():
        t0 = time.perf_counter()
        acc.update(x, y)
        busy += time.perf_counter() - t0
    t0 = time.perf_counter()
    out = acc.compute()
    busy += time.perf_counter() - t0
    return busy, out["nc1"]


def run_b(data: Data) -> tuple[float, float]:
    busy = 0.0
    totals = torch.zeros(data.c, data.d, dtype=torch.float64)
    counts = torch.zeros(data.c, dtype=torch.float64)
    for x, y in data.chunks():  # pass 1: MeanAccumulator
        t0 = time.perf_counter()
        idxs = (y[:, None] == torch.arange(data.c)[None, :]).to(torch.float64)  # (B, C) one-hot, as in the library
        counts += idxs.sum(dim=0)
        totals += idxs.T @ x.to(torch.float64)
        busy += time.perf_counter() - t0
    means = totals / counts[:, None]
    cov = torch.zeros(data.d, data.d, dtype=torch.float64)
    for x, y in data.chunks():  # pass 2: CovarAccumulator
        t0 = time.perf_counter()
        diff = x.to(torch.float64) - means[y]
        cov += diff.T @ diff
        busy += time.perf_counter() - t0
    t0 = time.perf_counter()
    sigma_w = cov / counts.sum()
    m = means - means.mean(dim=0)
    sigma_b = m.T @ m / data.c
    value = float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / data.c)
    busy += time.perf_counter() - t0
    return busy, value


def run_c(data: Data) -> tuple[float, float]:
    busy = 0.0
    xs, ys = [], []
    for x, y in data.chunks():
        xs.append(x)
        ys.append(y)
    t0 = time.perf_counter()
    x = torch.cat(xs).to(torch.float64)
    y = torch.cat(ys)
    del xs, ys
    sigma_w = torch.zeros(data.d, data.d, dtype=torch.float64)
    means = torch.zeros(data.c, data.d, dtype=torch.float64)
    for c in range(data.c):
        xc = x[y == c]
        means[c] = xc.mean(dim=0)
        sigma_w += xc.shape[0] * torch.cov(xc.T, correction=0)
    sigma_w /= x.shape[0]
    value = nc1_from(sigma_w, means)
    busy += time.perf_counter() - t0
    return busy, value


def worker(method: str, args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = Data(args.n, args.d, args.c, args.chunk, args.seed)
    warm = torch.randn(64, 64, dtype=torch.float64)  # warm up BLAS / LAPACK outside the measurement
    torch.linalg.eigvalsh(warm @ warm.T)
    base = rss_bytes()
    times = []
    for _ in range(args.repeat):
        if method == "gen":
            busy, value = run_gen(data)
        elif method in ("a", "a+"):
            busy, value = run_a(data, with_head=method == "a+")
        elif method == "b":
            busy, value = run_b(data)
        else:
            busy, value = run_c(data)
        times.append(busy)
    peak = peak_rss_bytes()
    print(json.dumps({"method": method, "seconds": min(times), "all_seconds": times,
                      "peak_delta": max(0, peak - base), "nc1": value}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=10k, d=128, C=10")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--d", type=int, default=None)
    parser.add_argument("--c", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=2000, help="rows per generated chunk (an evaluation batch)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the fastest is reported")
    parser.add_argument("--worker", choices=sorted(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = (10_000, 128, 10) if args.quick else (100_000, 512, 100)
    args.n, args.d, args.c = args.n or quick[0], args.d or quick[1], args.c or quick[2]
    if args.worker:
        worker(args.worker, args)
        return

    print(f"bench_metrics: N={args.n} d={args.d} C={args.c} chunk={args.chunk} seed={args.seed} repeat={args.repeat}")
    threads = args.threads or torch.get_num_threads()
    print(
        f"date {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} ({threads} threads), "
        f"python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}"
    )
    results = {}
    for method in METHODS:
        cmd = [sys.executable, __file__, "--worker", method, "--n", str(args.n), "--d", str(args.d),
               "--c", str(args.c), "--chunk", str(args.chunk), "--seed", str(args.seed), "--repeat", str(args.repeat),
               "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"method {method} failed:\n{proc.stderr[-4000:]}")
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])

    ref = results["a"]
    passes = {"a": 1, "a+": 1, "b": 2, "c": 1}
    if args.quick:
        print("(--quick: small sizes; the ratios are dominated by fixed costs)")
    header = f"{'method':48s} {'passes':>6s} {'time s':>8s} {'x (a)':>7s} {'peak MiB':>9s} {'x (a)':>7s} {'NC1':>12s} {'rel.diff':>9s}"
    print(header)
    print("-" * len(header))
    for method, label in METHODS.items():
        r = results[method]
        if method == "gen":
            print(f"{label:48s} {'':6s} {'':8s} {'':7s} {r['peak_delta'] / 2**20:9.1f} {'':7s}")
            continue
        t_ratio = r["seconds"] / ref["seconds"]
        m_ratio = r["peak_delta"] / ref["peak_delta"] if ref["peak_delta"] else float("nan")
        rel = abs(r["nc1"] - ref["nc1"]) / abs(ref["nc1"])
        print(
            f"{label:48s} {passes[method]:6d} {r['seconds']:8.2f} {t_ratio:7.2f} "
            f"{r['peak_delta'] / 2**20:9.1f} {m_ratio:7.2f} {r['nc1']:12.6g} {rel:9.1e}"
        )
    state = (args.d * args.d + args.c * args.d + args.c) * 8
    print("all run times (s): " + ", ".join(f"{m}: " + "/".join(f"{t:.2f}" for t in r["all_seconds"]) for m, r in results.items() if m != "gen"))
    print(
        f"accumulator state (counts, class sums, Σxxᵀ in float64): {state / 2**20:.1f} MiB; "
        f"full feature matrix in float64: {args.n * args.d * 8 / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
