"""Worker of the 2-process drop-in test (tests/test_trainer_dropin.py).

``python dropin_worker.py OUT.json`` (one process) or ``torchrun --nproc_per_node 2 dropin_worker.py OUT.json``.
On the same global batch: Trainer and InfoNCTrainer (weights 0) train a BERT classifier whose loss uses
``num_items_in_batch`` (so ``average_tokens_across_devices`` rescales it by the process count) and a CLIP on
image–caption pairs (``return_loss``: CLIP's loss of each process's batch), and InfoNCTrainer evaluates with an MI loss (its per-sample evaluation components). Rank 0 writes the results.
"""

from __future__ import annotations

import json
import os
import sys

import torch


def run(out_path: str) -> None:
    from transformers import Trainer, TrainingArguments, default_data_collator

    from trainer_fixtures import image_dataset, summed_bert, text_dataset
    from hf_infonc import InfoNCTrainer, InfoNCTrainingArguments
    from hf_infonc.testing import tiny_clip

    world = int(os.environ.get("WORLD_SIZE", "1"))
    data, test = text_dataset(n=48, seed=0), text_dataset(n=32, seed=1)
    common = dict(
        per_device_train_batch_size=8 // world, per_device_eval_batch_size=8 // world, max_steps=3, learning_rate=0.1,
        optim="sgd", lr_scheduler_type="constant", logging_steps=1, use_cpu=True, report_to=[], save_strategy="no",
        seed=0, dataloader_drop_last=True, disable_tqdm=True,
    )
    result: dict = {"world": world}
    trainer = None
    pairs_collate = lambda features: {**default_data_collator(features), "return_loss": True}  # noqa: E731
    cases = (  # prefix, model, data, collator, the trained weight compared
        ("", lambda: summed_bert(seed=1), data, default_data_collator, lambda m: m.classifier.weight),
        ("pairs_", lambda: tiny_clip(seed=3), image_dataset(n=48, captions=True), pairs_collate,
         lambda m: m.visual_projection.weight),
    )
    for prefix, make_model, train, collate, weight in cases:
        for name, cls, args_cls in (("trainer", Trainer, TrainingArguments), ("infonc", InfoNCTrainer, InfoNCTrainingArguments)):
            args = args_cls(output_dir=os.path.join(os.path.dirname(out_path), f"{prefix}{name}_{world}"), **common)
            trainer = cls(model=make_model(), args=args, train_dataset=train, data_collator=collate)
            trainer.train()
            result[f"{prefix}{name}_losses"] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            result[f"{prefix}{name}_params"] = weight(trainer.model).detach().reshape(-1).tolist()
    args = InfoNCTrainingArguments(output_dir=os.path.join(os.path.dirname(out_path), f"eval_{world}"), mi_weight=0.1, **common)
    evaluator = InfoNCTrainer(model=summed_bert(seed=2), args=args, eval_dataset=test, data_collator=default_data_collator)
    metrics = evaluator.evaluate()
    timings = ("runtime", "per_second", "preparation_time")
    result["eval"] = {k: v for k, v in metrics.items() if k.startswith("eval_") and not any(t in k for t in timings)}
    if trainer.is_world_process_zero():
        with open(out_path, "w") as handle:
            json.dump(result, handle)
    evaluator.end() if hasattr(evaluator, "end") else None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run(sys.argv[1])
