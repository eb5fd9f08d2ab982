"""Worker for the 1-process vs 2-process equivalence test of SemiSupervisedTrainer (FreeMatch + info losses).

``python ssl_worker.py OUT.json`` (one process) or ``torchrun --nproc_per_node 2 ssl_worker.py OUT.json``.
The global batch is the same in both cases (deterministic views, a model without BatchNorm);
rank 0 writes the log history and the final parameters.
"""

from __future__ import annotations

import json
import os
import sys

import torch


def run(out_path: str) -> None:
    from hf_infonc.semi_supervised import SemiSupervisedCollator, SemiSupervisedConfig, SemiSupervisedDataset, SemiSupervisedTrainer
    from hf_infonc.testing import tiny_vit_classifier
    from hf_infonc.training_args import InfoNCTrainingArguments

    world = int(os.environ.get("WORLD_SIZE", "1"))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(64, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 3, (64,), generator=generator)
    rows = [{"image": images[i], "label": int(labels[i])} for i in range(64)]
    config = SemiSupervisedConfig(
        algorithm="freematch", unlabeled_ratio=2, threshold_ema=0.5, fairness_weight=0.5, info_target="both"
    )
    dataset = SemiSupervisedDataset(rows[:12], rows, unlabeled_ratio=2, seed=0)
    collator = SemiSupervisedCollator(
        labeled_transform=lambda x: x, weak_transform=lambda x: x, strong_transform=lambda x: x.flip(-1) * 0.8
    )
    args = InfoNCTrainingArguments(
        output_dir=os.path.join(os.path.dirname(out_path), f"ssl_run_{world}"),
        per_device_train_batch_size=8 // world,
        max_steps=3,
        learning_rate=0.05,
        optim="sgd",
        lr_scheduler_type="constant",
        logging_steps=1,
        mi_weight=0.2,
        entropy_gap_weight=0.1,
        cma_weight=0.2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        seed=0,
        dataloader_drop_last=True,
        disable_tqdm=True,
    )
    trainer = SemiSupervisedTrainer(
        model=tiny_vit_classifier(num_labels=3, image_size=16, seed=1),
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        ssl_config=config,
    )
    trainer.train()
    if trainer.is_world_process_zero():
        params = {k: v.detach().double().flatten()[:64].tolist() for k, v in trainer.model.named_parameters()}
        with open(out_path, "w") as handle:
            json.dump({"log_history": trainer.state.log_history, "params": params, "world": world}, handle)
    # shut the process group down: two CPU processes can otherwise abort at exit (SIGABRT)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run(sys.argv[1])
