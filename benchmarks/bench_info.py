"""Speed and accuracy of ``hf_infonc.info`` against the naive route of the paper authors' code.

For every (n, d) in {256, 1024, 4096} x {64, 512}, plus (4096, 128) (the target case), with
fixed-seed features ``x`` (n x d), a head ``W`` (C x d, C = 10), labels ``y`` and ``b = W[y]``
(the paper's sample-level use: each sample against its head row), or ``b`` = random features of
the same shape:

* ours:   ``matrix_entropy(x)``, ``mir(x, b)``, ``hdr(x, b)`` on float64 tensors: auto route,
          spectra in float64 (d x d duals, and the row-wise Kronecker dual of the joint when it
          is smaller than n).
* naive:  exactly what the authors' code does, on the same features cast to float32 once
          (outside the timing): L2-normalise in float32, n x n Gram, + 1e-6·I
          jitter, float32 ``torch.linalg.eigh``, eigenvalues / n clamped at 1e-7, -Σ λ log λ;
          MI from the n x n Hadamard joint ``K_x ⊙ K_b`` with the same steps.
          Forward + backward: features with ``requires_grad``, backward through the eigenvalues
          (``torch.linalg.eigvalsh``).
* ref64:  float64 n x n ``eigvalsh`` of the exact cosine Grams (no jitter), eigenvalues / n,
          values ≤ 1e-12 dropped. Not timed.

Timing: ``time.perf_counter``; a global warm-up (small eigh / eigvalsh / matmul in both dtypes,
one forward + backward of each function) first, so no measurement pays for loading the LAPACK
kernels; then per measurement one warm-up call and the median of ``--repeats`` calls; a
measurement whose warm-up call already took more than ``SLOW_S`` seconds is not repeated (the
warm-up run is the measurement), which keeps the slow naive n = 4096 cases to one run each,
and calls slower than ``SLOW_S / 8`` get at most 3 timed runs.
The naive MIR is the sum of its three timed entropies (K_x, K_b and the joint; each timing
includes forming its Gram), the naive HDR the sum of the first two: the naive method computes
these entropies independently, so the sum is its end-to-end cost, measured without running each
n x n eigendecomposition twice or three times. ``torch.set_num_threads`` is left at its
default. Ratios are naive time / our time, measured in the same run.

Usage:
    .venv/bin/python benchmarks/bench_info.py              # full table (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_info.py --quick      # n ∈ {256, 1024}
    .venv/bin/python benchmarks/bench_info.py --markdown   # markdown table
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Callable

import torch
import torch.nn.functional as F

from hf_infonc.info import hdr, matrix_entropy, mir

NUM_CLASSES = 10
JITTER = 1e-6
CLAMP = 1e-7
SLOW_S = 2.0  # a call slower than this is measured once (its first run)

FULL_CASES = [(256, 64), (256, 512), (1024, 64), (1024, 512), (4096, 64), (4096, 128), (4096, 512)]
QUICK_CASES = [(256, 64), (1024, 128)]


# ---------------------------------------------------------------------------------------------
# The naive route (authors' code) and the float64 reference
# ---------------------------------------------------------------------------------------------
def naive_gram(z: torch.Tensor) -> torch.Tensor:
    zn = F.normalize(z.float(), dim=1)
    return zn @ zn.T


def naive_entropy_of_gram(k: torch.Tensor, *, values_only: bool = False) -> torch.Tensor:
    n = k.shape[0]
    jittered = k + JITTER * torch.eye(n, dtype=k.dtype)
    lam = torch.linalg.eigvalsh(jittered) if values_only else torch.linalg.eigh(jittered)[0]
    lam = (lam / n).clamp_min(CLAMP)
    return -(lam * torch.log(lam)).sum()


def ref64_entropy_of_gram(k: torch.Tensor) -> float:
    lam = torch.linalg.eigvalsh(k.double()) / k.shape[0]
    lam = lam[lam > 1e-12]
    return float(-(lam * torch.log(lam)).sum())


def ref64_gram(z: torch.Tensor) -> torch.Tensor:
    zn = F.normalize(z.double(), dim=1)
    return zn @ zn.T


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def measure(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time (s) of ``fn`` after one warm-up call, and its last result."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    if first > SLOW_S:
        return first, out
    if first > SLOW_S / 8:
        repeats = min(repeats, 3)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def fwd_bwd_ours(x: torch.Tensor) -> Callable[[], float]:
    def run() -> float:
        leaf = x.detach().clone().requires_grad_(True)
        h = matrix_entropy(leaf)
        h.backward()
        return float(h.detach())

    return run


def fwd_bwd_naive(x: torch.Tensor) -> Callable[[], float]:
    def run() -> float:
        leaf = x.detach().clone().requires_grad_(True)
        h = naive_entropy_of_gram(naive_gram(leaf), values_only=True)
        h.backward()
        return float(h.detach())

    return run


def warm_up() -> None:
    """Load the BLAS / LAPACK kernels and autograd once, before anything is timed."""
    g = torch.Generator().manual_seed(12345)
    for dtype in (torch.float32, torch.float64):
        z = torch.randn(96, 16, generator=g, dtype=dtype)
        k = z @ z.T
        torch.linalg.eigh(k)
        torch.linalg.eigvalsh(k)
        torch.linalg.eigvalsh(z.T @ z)
        fwd_bwd_ours(z)()
        fwd_bwd_naive(z)()
        b = z[torch.arange(96) % 10]
        mir(z, b)
        mir(z, z.flip(0))
        hdr(z, b)


def run_case(n: int, d: int, repeats: int, seed: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed + 1000 * n + d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    head = torch.randn(NUM_CLASSES, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    b_head = head[labels]
    b_rand = torch.randn(n, d, generator=g, dtype=torch.float64)
    x32 = x.float()
    r: dict[str, float] = {"n": n, "d": d}

    # entropy, forward
    r["t_h"], h = measure(lambda: float(matrix_entropy(x)), repeats)
    r["t_h_naive"], h_naive = measure(lambda: float(naive_entropy_of_gram(naive_gram(x32))), repeats)
    # entropy, forward + backward
    r["t_hb"], _ = measure(fwd_bwd_ours(x), repeats)
    r["t_hb_naive"], _ = measure(fwd_bwd_naive(x32), repeats)

    h_ref = ref64_entropy_of_gram(ref64_gram(x))
    r["h"], r["h_err_ref"], r["h_err_naive"] = h, abs(h - h_ref), abs(h - h_naive)

    for tag, b in (("head", b_head), ("rand", b_rand)):
        b32 = b.float()
        r[f"t_mir_{tag}"], mir_ours = measure(lambda: float(mir(x, b)), repeats)
        r[f"t_hdr_{tag}"], hdr_ours = measure(lambda: float(hdr(x, b)), repeats)
        t_b, hb_naive = measure(lambda: float(naive_entropy_of_gram(naive_gram(b32))), repeats)
        t_j, hj_naive = measure(lambda: float(naive_entropy_of_gram(naive_gram(x32) * naive_gram(b32))), repeats)
        r[f"t_mir_{tag}_naive"] = r["t_h_naive"] + t_b + t_j
        r[f"t_hdr_{tag}_naive"] = r["t_h_naive"] + t_b
        mir_naive = (h_naive + hb_naive - hj_naive) / min(h_naive, hb_naive)
        hdr_naive = abs(h_naive - hb_naive) / max(h_naive, hb_naive)
        r[f"mir_{tag}"], r[f"hdr_{tag}"] = mir_ours, hdr_ours
        r[f"mir_{tag}_err_naive"] = abs(mir_ours - mir_naive)
        r[f"hdr_{tag}_err_naive"] = abs(hdr_ours - hdr_naive)
        if tag == "head":  # float64 n x n reference (for the random b: naive difference only, to save time)
            kx, kb = ref64_gram(x), ref64_gram(b)
            hb_ref, hj_ref = ref64_entropy_of_gram(kb), ref64_entropy_of_gram(kx * kb)
            mir_ref = (h_ref + hb_ref - hj_ref) / min(h_ref, hb_ref)
            hdr_ref = abs(h_ref - hb_ref) / max(h_ref, hb_ref)
            r[f"mir_{tag}_err_ref"] = abs(mir_ours - mir_ref)
            r[f"hdr_{tag}_err_ref"] = abs(hdr_ours - hdr_ref)
    return r


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
COLUMNS = [
    ("n", "n", lambda r: f"{r['n']}"),
    ("d", "d", lambda r: f"{r['d']}"),
    ("H ours ms", "H ours (ms)", lambda r: f"{1e3 * r['t_h']:.2f}"),
    ("H naive ms", "H naive (ms)", lambda r: f"{1e3 * r['t_h_naive']:.1f}"),
    ("H x", "H ×", lambda r: f"{r['t_h_naive'] / r['t_h']:.0f}"),
    ("H f+b x", "H fwd+bwd ×", lambda r: f"{r['t_hb_naive'] / r['t_hb']:.0f}"),
    ("MIR head x", "MIR head ×", lambda r: f"{r['t_mir_head_naive'] / r['t_mir_head']:.1f}"),
    ("MIR rand x", "MIR rand ×", lambda r: f"{r['t_mir_rand_naive'] / r['t_mir_rand']:.1f}"),
    ("HDR head x", "HDR head ×", lambda r: f"{r['t_hdr_head_naive'] / r['t_hdr_head']:.0f}"),
    ("HDR rand x", "HDR rand ×", lambda r: f"{r['t_hdr_rand_naive'] / r['t_hdr_rand']:.0f}"),
    ("H", "H", lambda r: f"{r['h']:.6f}"),
    ("|H-ref64|", "\\|H−ref64\\|", lambda r: f"{r['h_err_ref']:.1e}"),
    ("|H-naive|", "\\|H−naive\\|", lambda r: f"{r['h_err_naive']:.1e}"),
    ("MIR head", "MIR head", lambda r: f"{r['mir_head']:.6f}"),
    ("|MIR-ref64|", "\\|MIR head−ref64\\|", lambda r: f"{r['mir_head_err_ref']:.1e}"),
    ("|MIR-naive|", "\\|MIR head−naive\\|", lambda r: f"{r['mir_head_err_naive']:.1e}"),
    ("|MIRr-naive|", "\\|MIR rand−naive\\|", lambda r: f"{r['mir_rand_err_naive']:.1e}"),
    ("|HDR-ref64|", "\\|HDR head−ref64\\|", lambda r: f"{r['hdr_head_err_ref']:.1e}"),
    ("|HDR-naive|", "\\|HDR head−naive\\|", lambda r: f"{r['hdr_head_err_naive']:.1e}"),
]


def print_table(rows: list[dict[str, float]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(c[1] for c in COLUMNS) + " |")
        print("|" + "|".join("---:" for _ in COLUMNS) + "|")
        for r in rows:
            print("| " + " | ".join(c[2](r) for c in COLUMNS) + " |")
        return
    cells = [[c[0] for c in COLUMNS]] + [[c[2](r) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    for row in cells:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small subset: n ∈ {256, 1024}")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    cases = QUICK_CASES if args.quick else FULL_CASES
    repeats = 3 if args.quick and args.repeats == 5 else args.repeats
    started = time.perf_counter()
    load = os.getloadavg()
    print(f"# bench_info  {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    print(
        f"# torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"python {platform.python_version()}, {platform.machine()}, seed {args.seed}, "
        f"repeats {repeats} (median; calls > {SLOW_S:.0f} s measured once), C = {NUM_CLASSES}, "
        f"load average at start {load[0]:.2f}"
    )
    warm_up()
    print("# ratios × = naive time / our time (same run); naive = fp32 n×n eigh + 1e-6·I jitter + clamp 1e-7")
    rows = []
    for n, d in cases:
        rows.append(run_case(n, d, repeats, args.seed))
        print(f"#   done n={n} d={d}  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    print_table(rows, args.markdown)
    print(f"# total {time.perf_counter() - started:.0f} s, load average at end {os.getloadavg()[0]:.2f}")
    target = next((r for r in rows if (r["n"], r["d"]) == (4096, 128)), None)
    if target is not None:
        ratio = target["t_h_naive"] / target["t_h"]
        verdict = "met" if ratio >= 100 and target["h_err_ref"] < 1e-6 else "NOT met"
        print(
            f"# target n=4096, d=128: entropy {ratio:.0f}× faster than naive (goal ≥ 100×), "
            f"|H−ref64| = {target['h_err_ref']:.1e}: {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
