"""Wide ResNet (WRN-d-k) as a ``transformers`` model: the backbone of FixMatch / FreeMatch / USB.

Zagoruyko & Komodakis 2016 (arXiv 1605.07146) with FixMatch's tweaks (Sohn et al. 2020, arXiv
2001.07685); architecture and parameter count: docs/wide_resnet.md. Importing this module registers
``"wide_resnet"`` with ``AutoConfig``, ``AutoModel`` and ``AutoModelForImageClassification``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput
from transformers.utils import can_return_tuple

__all__ = [
    "WideResNetConfig", "WideResNetForImageClassification", "WideResNetModel", "WideResNetPreTrainedModel",
    "wide_resnet_num_parameters",
]

MODEL_TYPE = "wide_resnet"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return _is_int(value) and value >= 1


def _nearest_valid_depths(depth: int) -> list[int]:
    """The valid depths (6n + 4, n ≥ 1) just below and just above ``depth``."""
    below = 6 * ((depth - 4) // 6) + 4
    candidates = [below, below + 6] if below != depth else [depth]
    return [d for d in candidates if d >= 10] or [10]


class WideResNetConfig(PretrainedConfig):
    """Configuration of a Wide ResNet WRN-``depth``-``widen_factor``.

    Args:
        depth: total depth ``6n + 4`` (n ≥ 1 blocks per group; 28 in FixMatch / FreeMatch).
        widen_factor: width multiplier k (groups of 16k, 32k, 64k channels; WRN-28-2 for CIFAR-10, -8 for CIFAR-100).
        num_channels: channels of the input images (3 for RGB).
        drop_rate: dropout probability between the two convolutions of each block (0 in FixMatch).
        bn_momentum: PyTorch BatchNorm momentum (0.001, i.e. TensorFlow's decay 0.999).
        bn_eps: BatchNorm epsilon (0.001, TensorFlow's default, as in FixMatch and USB).
        leaky_relu_slope: negative slope of every LeakyReLU (0.1).
        image_size: preprocessing size used by :func:`hf_infonc.factory.build_model` (the model takes any size).
        num_labels / id2label / label2id: the classes, as for any ``transformers`` classifier.
    """

    model_type = MODEL_TYPE

    depth: int = 28
    widen_factor: int = 2
    num_channels: int = 3
    drop_rate: float = 0.0
    bn_momentum: float = 0.001
    bn_eps: float = 0.001
    leaky_relu_slope: float = 0.1
    image_size: int = 32

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        depth = self.depth
        if not _is_int(depth) or depth < 10 or (depth - 4) % 6 != 0:
            hint = f"nearest valid depths: {_nearest_valid_depths(depth)}" if _is_int(depth) else "e.g. 10, 16, 22, 28"
            raise ValueError(
                f"WideResNetConfig.depth must be 6n + 4 with n ≥ 1 (two 3×3 convs per block, n blocks in each of "
                f"3 groups, plus the stem conv and the classifier), got {depth!r}; {hint}."
            )
        checks = (  # (field, valid, rule, hint): "WideResNetConfig.<field> <rule>, got <value><hint>."
            ("widen_factor", _is_positive_int, "must be an integer ≥ 1 (channels 16k, 32k, 64k)",
             "; FixMatch uses 2 for CIFAR-10 and 8 for CIFAR-100"),
            ("num_channels", _is_positive_int, "must be an integer ≥ 1 (3 for RGB images)", ""),
            ("drop_rate", lambda v: 0.0 <= float(v) < 1.0, "must be in [0, 1)", ""),
            ("bn_momentum", lambda v: 0.0 < float(v) <= 1.0,
             "must be in (0, 1] (PyTorch convention: weight of the new batch)", "; FixMatch uses 0.001"),
            ("bn_eps", lambda v: float(v) > 0.0, "must be positive", ""),
            ("leaky_relu_slope", lambda v: float(v) >= 0.0, "must be ≥ 0", ""),
            ("image_size", _is_positive_int, "must be a positive integer", ""),
        )
        for name, valid, rule, hint in checks:
            value = getattr(self, name)
            if not valid(value):
                raise ValueError(f"WideResNetConfig.{name} {rule}, got {value!r}{hint}.")

    @property
    def blocks_per_group(self) -> int:
        """n = (depth − 4) / 6."""
        return (self.depth - 4) // 6

    @property
    def widths(self) -> tuple[int, int, int, int]:
        """Channels of the stem and of the three groups: (16, 16k, 32k, 64k)."""
        k = self.widen_factor
        return (16, 16 * k, 32 * k, 64 * k)

    @property
    def hidden_size(self) -> int:
        """Dimension of the pooled features fed to the classifier (64k)."""
        return 64 * self.widen_factor


def wide_resnet_num_parameters(depth: int, widen_factor: int, num_labels: int, num_channels: int = 3) -> int:
    """The closed-form parameter count of :class:`WideResNetForImageClassification` (docs/wide_resnet.md)."""
    config = WideResNetConfig(depth=depth, widen_factor=widen_factor, num_channels=num_channels, num_labels=num_labels)
    n = config.blocks_per_group
    widths = config.widths
    total = 9 * num_channels * widths[0]  # stem conv, no bias
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        first = 2 * w_in + 9 * w_in * w_out + 2 * w_out + 9 * w_out * w_out
        if w_in != w_out:
            first += w_in * w_out  # 1×1 shortcut
        total += first + (n - 1) * (4 * w_out + 18 * w_out * w_out)
    return total + 2 * widths[-1] + widths[-1] * num_labels + num_labels


class WideResNetBasicBlock(nn.Module):
    """Pre-activation block: BN → LeakyReLU → conv3x3(stride) → BN → LeakyReLU → dropout → conv3x3, + shortcut."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, config: WideResNetConfig,
        activate_before_residual: bool = False,
    ) -> None:
        super().__init__()
        bn = dict(momentum=config.bn_momentum, eps=config.bn_eps)
        self.bn1 = nn.BatchNorm2d(in_channels, **bn)
        self.act1 = nn.LeakyReLU(config.leaky_relu_slope)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, **bn)
        self.act2 = nn.LeakyReLU(config.leaky_relu_slope)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.drop_rate = float(config.drop_rate)
        self.activate_before_residual = bool(activate_before_residual)
        self.shortcut = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.act1(self.bn1(x))
        out = self.act2(self.bn2(self.conv1(activated)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        residual_input = activated if self.activate_before_residual else x
        shortcut = residual_input if self.shortcut is None else self.shortcut(residual_input)
        return shortcut + out


class WideResNetPreTrainedModel(PreTrainedModel):
    """Shared ``config_class``, weight initialisation and naming for the Wide ResNet models."""

    config_class = WideResNetConfig
    base_model_prefix = "wide_resnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["WideResNetBasicBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        """FixMatch-PyTorch / USB initialisation (only for tensors ``from_pretrained`` did not load)."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
        elif isinstance(module, nn.BatchNorm2d):  # explicit: not left to the installed transformers
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            init.xavier_normal_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def _output_hidden_states(self, output_hidden_states: bool | None) -> bool:
        return self.config.output_hidden_states if output_hidden_states is None else output_hidden_states

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        expected = self.config.num_channels
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(
                f"{type(self).__name__} expects pixel_values of shape (batch, {expected}, height, width), got {shape}. "
                f"Batch the images (e.g. torch.stack) and put the channels first."
            )
        if pixel_values.shape[1] != expected:
            raise ValueError(
                f"{type(self).__name__} was built for {expected}-channel images (config.num_channels={expected}), "
                f"but pixel_values has {pixel_values.shape[1]} channels (shape {tuple(pixel_values.shape)}). Convert "
                f"the images (e.g. grey → RGB with hf_infonc.data.transforms.ConvertRGB), or build the model with "
                f"num_channels={pixel_values.shape[1]}."
            )


class WideResNetModel(WideResNetPreTrainedModel):
    """The Wide ResNet body: stem, three groups, final BN + LeakyReLU (``last_hidden_state``), global average
    pool (``pooler_output``, ``batch × 64k``)."""

    def __init__(self, config: WideResNetConfig) -> None:
        super().__init__(config)
        widths = config.widths
        n = config.blocks_per_group
        self.stem = nn.Conv2d(config.num_channels, widths[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for g, stride in enumerate((1, 2, 2)):
            blocks = [
                WideResNetBasicBlock(
                    widths[g] if i == 0 else widths[g + 1], widths[g + 1], stride if i == 0 else 1, config,
                    activate_before_residual=(g == 0 and i == 0),
                )
                for i in range(n)
            ]
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.ModuleList(groups)
        self.final_norm = nn.BatchNorm2d(widths[-1], momentum=config.bn_momentum, eps=config.bn_eps)
        self.final_act = nn.LeakyReLU(config.leaky_relu_slope)
        self.post_init()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs: Any
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        """``hidden_states`` (when asked): the stem output and the output of each group; ``return_dict=False``
        gives a tuple."""
        self._check_pixel_values(pixel_values)
        hidden = self.stem(pixel_values)
        states = [hidden]
        for group in self.groups:
            hidden = group(hidden)
            states.append(hidden)
        hidden = self.final_act(self.final_norm(hidden))
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=hidden, pooler_output=hidden.mean(dim=(2, 3)),
            hidden_states=tuple(states) if self._output_hidden_states(output_hidden_states) else None,
        )


class WideResNetForImageClassification(WideResNetPreTrainedModel):
    """Wide ResNet with a linear classifier on the globally pooled features (FixMatch's WRN-28-k).

    ``loss = cross_entropy(logits, labels)`` (class ids, or class probabilities ``batch × num_labels``);
    ``hidden_states = (pooled features,)`` (``batch × 64k``, also the adapter's features).
    """

    def __init__(self, config: WideResNetConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.wide_resnet = WideResNetModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutput | tuple:
        pooled = self.wide_resnet(pixel_values, output_hidden_states=False, return_dict=True).pooler_output
        logits = self.classifier(pooled)
        loss = None if labels is None else self._loss(logits, labels)
        hidden_states = (pooled,) if self._output_hidden_states(output_hidden_states) else None
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(logits.device)
        if labels.is_floating_point():
            if labels.shape != logits.shape:
                raise ValueError(
                    f"Floating-point labels are read as class probabilities and need the shape of the logits "
                    f"{tuple(logits.shape)}, got {tuple(labels.shape)}. Pass integer class ids (shape (batch,)) "
                    f"instead."
                )
            return F.cross_entropy(logits.float(), labels.float())
        if labels.shape != logits.shape[:1]:
            raise ValueError(
                f"labels must hold one class id per image, shape ({logits.shape[0]},), got {tuple(labels.shape)}."
            )
        return F.cross_entropy(logits.float(), labels.long())


def _register_auto_classes() -> None:
    """Register ``"wide_resnet"`` with the Auto classes; a second registration is a no-op."""
    AutoConfig.register(MODEL_TYPE, WideResNetConfig, exist_ok=True)
    AutoModel.register(WideResNetConfig, WideResNetModel, exist_ok=True)
    AutoModelForImageClassification.register(WideResNetConfig, WideResNetForImageClassification, exist_ok=True)


_register_auto_classes()
