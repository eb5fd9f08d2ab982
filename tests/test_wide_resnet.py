"""Wide ResNet as a transformers model: parameter counts, shapes, save/load, errors, training, adapter, factory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification

from hf_infonc.adapters import ImageClassificationAdapter, adapter_for
from hf_infonc.models import (
    WideResNetConfig,
    WideResNetForImageClassification,
    WideResNetModel,
    wide_resnet_num_parameters,
)
from hf_infonc.models.wide_resnet import _register_auto_classes

pytestmark = pytest.mark.usefixtures("single_blas_thread")


def tiny(num_labels: int = 10, seed: int = 0, **kwargs) -> WideResNetForImageClassification:
    """WRN-10-1 (one block per group, widths 16/16/32/64): fast enough for forwards on the CPU."""
    torch.manual_seed(seed)
    config = WideResNetConfig(depth=10, widen_factor=1, num_labels=num_labels, **kwargs)
    return WideResNetForImageClassification(config)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_wrn_28_2_has_the_published_fixmatch_parameter_count():
    # FixMatch-PyTorch reports 1,467,610 for WRN-28-2 with 10 classes. By hand (k = 2, n = 4 blocks per
    # group, widths 16 → 32 → 64 → 128, bias-free convs, a BN has 2·channels parameters):
    #   stem 3·16·9                                                           =       432
    #   group 1: first block 2·16 + 16·32·9 + 2·32 + 32·32·9 + 16·32 (1×1)     =    14,432
    #            3 more blocks 3·(2·32 + 32·32·9 + 2·32 + 32·32·9)            =    55,680
    #   group 2: first 2·32 + 32·64·9 + 2·64 + 64·64·9 + 32·64                =    57,536
    #            3 more 3·(4·64 + 18·64²)                                      =   221,952
    #   group 3: first 2·64 + 64·128·9 + 2·128 + 128·128·9 + 64·128           =   229,760
    #            3 more 3·(4·128 + 18·128²)                                    =   886,272
    #   final BN 2·128 + classifier 128·10 + 10                                =     1,546
    #   total                                                                 = 1,467,610
    model = WideResNetForImageClassification(WideResNetConfig(depth=28, widen_factor=2, num_labels=10))
    assert count(model) == 1_467_610
    assert wide_resnet_num_parameters(28, 2, 10) == 1_467_610


def test_wrn_28_8_parameter_count_matches_the_formula():
    # k = 8, widths 16 → 128 → 256 → 512, n = 4 (USB reports "23.4M"):
    #   stem 432
    #   group 1: first 2·16 + 16·128·9 + 2·128 + 128²·9 + 16·128 = 168,224;   3 · (4·128 + 18·128²) =    886,272
    #   group 2: first 2·128 + 128·256·9 + 2·256 + 256²·9 + 128·256 = 918,272; 3 · (4·256 + 18·256²) =  3,542,016
    #   group 3: first 2·256 + 256·512·9 + 2·512 + 512²·9 + 256·512 = 3,671,552; 3·(4·512 + 18·512²) = 14,161,920
    #   final BN 1,024 + classifier 512·100 + 100 = 52,324
    #   total 23,401,012
    model = WideResNetForImageClassification(WideResNetConfig(depth=28, widen_factor=8, num_labels=100))
    assert count(model) == 23_401_012
    assert wide_resnet_num_parameters(28, 8, 100) == 23_401_012
    assert model.config.hidden_size == 512 and model.classifier.in_features == 512


@pytest.mark.parametrize("depth,k,labels,channels", [(10, 1, 3, 3), (16, 2, 7, 1), (22, 3, 5, 3)])
def test_parameter_formula_matches_the_modules(depth, k, labels, channels):
    config = WideResNetConfig(depth=depth, widen_factor=k, num_labels=labels, num_channels=channels)
    assert count(WideResNetForImageClassification(config)) == wide_resnet_num_parameters(depth, k, labels, channels)


def test_initialisation_follows_fixmatch():
    torch.manual_seed(0)
    model = WideResNetForImageClassification(WideResNetConfig(depth=28, widen_factor=2, num_labels=10))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
            assert module.momentum == 0.001 and module.eps == 0.001
        if isinstance(module, nn.Conv2d):
            assert module.bias is None
    # kaiming_normal_(fan_out, leaky_relu with a=0): std = sqrt(2 / (out_channels · 3 · 3)) = sqrt(2 / 1152).
    conv = model.wide_resnet.groups[2][1].conv1
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 1152), rel=0.02)
    # xavier_normal_: std = sqrt(2 / (fan_in + fan_out)) = sqrt(2 / 138); bias 0.
    assert model.classifier.weight.std().item() == pytest.approx(math.sqrt(2 / 138), rel=0.1)
    assert torch.all(model.classifier.bias == 0)


@pytest.mark.parametrize("side", [28, 32])
def test_output_shapes(side):
    model = tiny(num_labels=10).eval()
    pixels = torch.randn(4, 3, side, side)
    out = model(pixel_values=pixels, output_hidden_states=True)
    assert out.logits.shape == (4, 10)
    assert out.loss is None
    assert len(out.hidden_states) == 1 and out.hidden_states[0].shape == (4, 64)
    # The logits are the classifier applied to the pooled features.
    torch.testing.assert_close(out.logits, model.classifier(out.hidden_states[0]))
    body = model.wide_resnet(pixels, output_hidden_states=True)
    down = [side, side, (side + 1) // 2, (side + 3) // 4]  # stem, stride 1, 2, 2
    assert [h.shape[-1] for h in body.hidden_states] == down
    assert body.last_hidden_state.shape == (4, 64, down[-1], down[-1])
    torch.testing.assert_close(body.pooler_output, body.last_hidden_state.mean(dim=(2, 3)))
    assert model(pixels, return_dict=False)[0].shape == (4, 10)


def test_loss_is_cross_entropy():
    model = tiny(num_labels=5).eval()
    pixels, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    out = model(pixel_values=pixels, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    soft = F.one_hot(labels, 5).float()
    torch.testing.assert_close(model(pixel_values=pixels, labels=soft).loss, out.loss)


def test_save_load_gives_identical_logits(tmp_path):
    model = tiny(num_labels=4, seed=1)
    pixels = torch.randn(8, 3, 32, 32)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # move the BatchNorm running statistics away from their initial values
            model(pixel_values=pixels * 2 + 1)
    model.eval()
    assert model.wide_resnet.final_norm.running_mean.abs().sum() > 0
    expected = model(pixel_values=pixels).logits
    model.save_pretrained(tmp_path)

    loaded = WideResNetForImageClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(pixel_values=pixels).logits, expected)
    auto = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(auto) is WideResNetForImageClassification
    assert torch.equal(auto(pixel_values=pixels).logits, expected)
    for name, buffer in model.state_dict().items():
        assert torch.equal(auto.state_dict()[name], buffer), name
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, WideResNetConfig) and (config.depth, config.widen_factor) == (10, 1)


@pytest.mark.parametrize(
    "depth,expected",
    [(27, r"\[22, 28\]"), (29, r"\[28, 34\]"), (4, r"\[10\]"), (8, r"\[10\]"), (3, r"\[10\]")],
)
def test_bad_depth_names_the_nearest_valid_depths(depth, expected):
    with pytest.raises(ValueError, match=r"6n \+ 4") as error:
        WideResNetConfig(depth=depth)
    assert error.match(expected)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"widen_factor": 0}, "widen_factor must be an integer ≥ 1"),
        ({"widen_factor": 1.5}, "widen_factor"),
        ({"num_channels": 0}, "num_channels must be an integer ≥ 1"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"bn_momentum": 0.0}, "bn_momentum"),
    ],
)
def test_bad_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WideResNetConfig(**kwargs)


def test_wrong_channel_count_is_a_clear_error():
    model = tiny().eval()
    with pytest.raises(ValueError, match=r"3-channel images .* has 1 channels"):
        model(pixel_values=torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"shape \(batch, 3, height, width\)"):
        model(pixel_values=torch.randn(3, 28, 28))
    grey = tiny(num_channels=1).eval()
    assert grey(pixel_values=torch.randn(2, 1, 28, 28)).logits.shape == (2, 10)


def test_one_training_step_decreases_the_loss_and_every_parameter_gets_a_gradient():
    model = tiny(num_labels=3, seed=2).train()
    torch.manual_seed(3)
    pixels, labels = torch.randn(12, 3, 32, 32), torch.arange(12) % 3
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = model(pixel_values=pixels, labels=labels).loss
    before.backward()
    # No dead parameters (FixMatch-PyTorch's width-changing blocks discard a BN; this wiring does not).
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    optimizer.step()
    optimizer.zero_grad()
    after = model(pixel_values=pixels, labels=labels).loss
    assert torch.isfinite(after) and after.item() < before.item() - 1e-3


def test_dropout_only_in_training():
    model = tiny(drop_rate=0.5, seed=4)
    pixels = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.equal(model(pixel_values=pixels).logits, model(pixel_values=pixels).logits)
    model.eval()
    assert torch.equal(model(pixel_values=pixels).logits, model(pixel_values=pixels).logits)


def test_image_classification_adapter_reads_the_pooled_features():
    model = tiny(num_labels=6, seed=5).eval()
    adapter = adapter_for(model)
    assert isinstance(adapter, ImageClassificationAdapter)
    pixels, labels = torch.randn(5, 3, 28, 28), torch.tensor([0, 1, 2, 3, 4])
    out = adapter.forward(model, {"pixel_values": pixels, "labels": labels})
    reference = model(pixel_values=pixels, output_hidden_states=True)
    assert out.features.shape == (5, 64)
    torch.testing.assert_close(out.features, reference.hidden_states[0])
    torch.testing.assert_close(out.features, model.wide_resnet(pixels).pooler_output)
    assert out.head_rows is model.classifier.weight
    torch.testing.assert_close(out.logits, reference.logits)
    torch.testing.assert_close(out.loss, F.cross_entropy(reference.logits, labels))


def test_factory_builds_wide_resnet_from_a_recipe():
    from hf_infonc.data import build_image_transform
    from hf_infonc.data.config import DataConfig
    from hf_infonc.factory import build_model
    from hf_infonc.recipe import ModelRecipe

    names = ["zero", "one", "two"]
    spec = ModelRecipe(
        family="image-classification",
        config={"model_type": "wide_resnet", "depth": 28, "widen_factor": 2, "image_size": 32},
    )
    built = build_model(spec, names)
    assert type(built.model) is WideResNetForImageClassification
    assert built.model.config.id2label == dict(enumerate(names))
    assert count(built.model) == wide_resnet_num_parameters(28, 2, 3)
    assert built.image_preprocessing.size["height"] == 32 and built.image_preprocessing.size["width"] == 32

    # The processor's transform feeds the model: 3 × 32 × 32 tensors from any RGB or grey image.
    from PIL import Image

    transform = build_image_transform(DataConfig(source="digits"), built.image_preprocessing, train=False)
    grey = Image.new("L", (8, 8), color=200)
    pixels = torch.stack([transform(grey), transform(grey.convert("RGB"))])
    assert pixels.shape == (2, 3, 32, 32)
    tiny_config = {"model_type": "wide_resnet", "depth": 10, "widen_factor": 1}
    small = build_model(ModelRecipe(family="image-classification", config=tiny_config), names).model.eval()
    assert small(pixel_values=pixels).logits.shape == (2, 3)


def test_registration_is_idempotent():
    _register_auto_classes()
    _register_auto_classes()
    config = AutoConfig.for_model("wide_resnet", depth=10, widen_factor=1, num_labels=2)
    assert isinstance(config, WideResNetConfig)
    model = AutoModelForImageClassification.from_config(config)
    assert type(model) is WideResNetForImageClassification
    from transformers import AutoModel

    assert type(AutoModel.from_config(config)) is WideResNetModel
