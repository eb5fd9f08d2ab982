"""open_clip models as ``transformers.PreTrainedModel`` (registered with ``AutoConfig`` / ``AutoModel`` on
import). Usage: docs/adapters.md ("open_clip")."""

from transformers import AutoConfig, AutoModel

from hf_infonc.models.open_clip.config import MODEL_TYPE, OpenCLIPConfig
from hf_infonc.models.open_clip.model import (
    OpenCLIPModel,
    OpenCLIPOutput,
    build_open_clip,
    is_causal_mask,
    rebuild_causal_masks,
    tiny_open_clip,
)
from hf_infonc.models.open_clip.tokenizer import OpenCLIPTokenizer

__all__ = [
    "OpenCLIPConfig", "OpenCLIPModel", "OpenCLIPOutput", "OpenCLIPTokenizer", "build_open_clip", "is_causal_mask",
    "rebuild_causal_masks", "tiny_open_clip",
]

AutoConfig.register(MODEL_TYPE, OpenCLIPConfig, exist_ok=True)
AutoModel.register(OpenCLIPConfig, OpenCLIPModel, exist_ok=True)
