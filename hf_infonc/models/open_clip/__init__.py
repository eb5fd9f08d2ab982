"""open_clip models as ``transformers.PreTrainedModel``: Trainer checkpoints, safetensors, the Hub.

``config`` (:class:`OpenCLIPConfig`, open_clip's model config dict), ``model`` (:class:`OpenCLIPModel`,
causal-mask repair), ``tokenizer`` (:class:`OpenCLIPTokenizer`), ``interop`` (open_clip's own file
layout and Hub references), ``tiny`` (a test model). Importing this package registers
``OpenCLIPConfig`` / ``OpenCLIPModel`` with ``AutoConfig`` / ``AutoModel``. Usage: docs/adapters.md ("open_clip").
"""

from transformers import AutoConfig, AutoModel
from transformers.utils import logging

from hf_infonc.models.open_clip.config import MODEL_TYPE, OpenCLIPConfig
from hf_infonc.models.open_clip.model import (
    OpenCLIPModel,
    OpenCLIPOutput,
    build_open_clip,
    is_causal_mask,
    rebuild_causal_masks,
)
from hf_infonc.models.open_clip.tiny import tiny_open_clip
from hf_infonc.models.open_clip.tokenizer import OpenCLIPTokenizer

__all__ = [
    "OpenCLIPConfig", "OpenCLIPModel", "OpenCLIPOutput", "OpenCLIPTokenizer", "build_open_clip", "is_causal_mask",
    "rebuild_causal_masks", "tiny_open_clip",
]

try:
    AutoConfig.register(MODEL_TYPE, OpenCLIPConfig, exist_ok=True)
    AutoModel.register(OpenCLIPConfig, OpenCLIPModel, exist_ok=True)
except Exception as error:  # pragma: no cover - registration API drift must not break imports
    logging.get_logger(__name__).warning(f"Could not register OpenCLIPModel with AutoConfig/AutoModel: {error}")
