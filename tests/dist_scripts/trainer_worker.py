"""Worker for the 1-process vs 2-process equivalence test of InfoNCTrainer.

Run as ``python trainer_worker.py OUT_DIR clip,pairs,bert [ACCUMULATION]`` (one process) or
``torchrun --nproc_per_node 2 trainer_worker.py OUT_DIR clip,pairs,bert [ACCUMULATION]`` (two CPU
processes over gloo). The global batch (16) is the same in every case: per-device batch
``16 / (processes · ACCUMULATION)`` with ``gradient_accumulation_steps=ACCUMULATION`` (default 1);
rank 0 writes the log history and the final parameters.
"""

from __future__ import annotations

import json
import os
import sys

import torch


def run(out_path: str, mode: str, accumulation: int = 1) -> None:
    import datasets
    from transformers import default_data_collator

    from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments
    from hf_infonc.testing import minilm_tokenizer, tiny_bert_classifier, tiny_clip

    world = int(os.environ.get("WORLD_SIZE", "1"))
    global_batch, steps = 16, 3
    generator = torch.Generator().manual_seed(0)
    n = global_batch * steps
    labels = torch.randint(0, 4, (n,), generator=generator)
    if mode == "clip":
        model = tiny_clip(seed=1)
        columns = {"pixel_values": torch.randn(n, 3, 32, 32, generator=generator).numpy(), "labels": labels.tolist()}
        extra = {"class_names": ["cat", "dog", "car", "tree"], "processing_class": minilm_tokenizer()}
    elif mode == "pairs":
        model = tiny_clip(seed=1)
        ids = torch.randint(1000, 2000, (n, 8), generator=generator)
        ids[:, 0], ids[:, -1] = 101, 102
        columns = {
            "pixel_values": torch.randn(n, 3, 32, 32, generator=generator).numpy(),
            "input_ids": ids.tolist(),
            "attention_mask": torch.ones_like(ids).tolist(),
        }
        extra = {}
    else:
        model = tiny_bert_classifier(num_labels=4, seed=1)
        ids = torch.randint(1000, 2000, (n, 12), generator=generator)
        columns = {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(), "labels": labels.tolist()}
        extra = {}
    dataset = datasets.Dataset.from_dict(columns)
    dataset.set_format("torch")
    suffix = f"_ga{accumulation}" if accumulation > 1 else ""
    args = InfoNCTrainingArguments(
        output_dir=os.path.join(os.path.dirname(out_path), f"run_{mode}_{world}{suffix}"),
        per_device_train_batch_size=global_batch // (world * accumulation),
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=0.05,
        optim="sgd",
        lr_scheduler_type="constant",
        logging_steps=1,
        cma_weight=0.3 if mode != "bert" else 0.2,
        mi_weight=0.2,
        entropy_gap_weight=0.1,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        seed=0,
        dataloader_drop_last=True,
        disable_tqdm=True,
    )
    trainer = InfoNCTrainer(
        model=model, args=args, train_dataset=dataset, eval_dataset=dataset, data_collator=default_data_collator, **extra
    )
    if mode == "clip":  # evaluate() before train() must not stop DDP from wrapping the model
        trainer.evaluate()
    trainer.train()
    if trainer.is_world_process_zero():
        params = {k: v.detach().double().flatten()[:64].tolist() for k, v in trainer.model.named_parameters()}
        with open(out_path, "w") as handle:
            record = {"log_history": trainer.state.log_history, "params": params, "world": world}
            json.dump({**record, "accumulation": accumulation}, handle)


def main(out_dir: str, modes: list[str], accumulation: int = 1) -> None:
    """One launch, several modes (each launch costs ~10 s of imports)."""
    for mode in modes:
        run(os.path.join(out_dir, f"{mode}.json"), mode, accumulation)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(
        sys.argv[1],
        sys.argv[2].split(",") if len(sys.argv) > 2 else ["clip"],
        int(sys.argv[3]) if len(sys.argv) > 3 else 1,
    )
