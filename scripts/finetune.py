#!/usr/bin/env python
"""Fine-tune from a recipe: ``accelerate launch scripts/finetune.py recipes/clip_cifar.yaml [--set k=v ...]``.

The same as ``hf-infonc finetune``; works under ``python``, ``accelerate launch`` and ``torchrun``.
"""

import sys

from hf_infonc.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
