"""Test-wide settings: never touch the network, never write to the user's HF cache."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
if "HF_HOME" not in os.environ:  # a temporary cache of our own, removed when the test run ends
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf_infonc_test_hf_home_")
    atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


@pytest.fixture(scope="module")
def single_blas_thread():
    """One BLAS thread for modules of tiny matrices: faster, and immune to oversubscription of a
    shared 2-core machine (idle threads spinning). The previous setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
