"""The QC network: shapes for isotropic and anisotropic configs, heads, config validation, cost."""

from __future__ import annotations

import pytest
import torch

from SegQCLib.errors import ModelError
from SegQCLib.network.config import ModelConfig, reference_qcresunet_config
from SegQCLib.network.qcresunet import (
    build_model,
    count_conv_macs,
    count_parameters,
    one_hot,
    with_test_time_augmentation,
)


def tiny_config(**overrides) -> ModelConfig:
    values = dict(widths=[4, 8, 16], blocks_per_stage=[1, 1, 1], strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                  decoder_from_stage=1, full_res_width=4, case_head_hidden=8, patch_size_zyx=[16, 16, 16],
                  dropout=0.0)
    values.update(overrides)
    return ModelConfig(**values)


def random_inputs(config: ModelConfig, shape_zyx, batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, len(config.modalities), *shape_zyx, generator=generator)
    seg = torch.randint(0, len(config.labels) + 1, (batch, *shape_zyx), generator=generator)
    return image, one_hot(seg, config.mask_labels)


def test_isotropic_config_gives_one_error_map_per_class_at_input_size():
    config = tiny_config()
    model = build_model(config).eval()
    image, mask = random_inputs(config, (16, 24, 32))
    output = model(image, mask)
    assert output.error_logits.shape == (2, 2, 16, 24, 32)
    assert output.dice.shape == (2,) and output.nsd.shape == (2,)


def test_anisotropic_strides_keep_the_thin_axis_and_restore_input_size():
    config = tiny_config(strides=[[1, 2, 2], [1, 2, 2], [2, 2, 2]], decoder_from_stage=2, patch_size_zyx=[4, 32, 32])
    model = build_model(config).eval()
    assert config.total_stride_zyx == [2, 8, 8]
    image, mask = random_inputs(config, (6, 24, 40))
    output = model(image, mask)
    assert output.error_logits.shape == (2, 2, 6, 24, 40)


def test_case_predictions_are_probabilities_and_nsd_is_optional():
    config = tiny_config(predict_nsd=False)
    model = build_model(config).eval()
    output = model(*random_inputs(config, (16, 16, 16)))
    assert output.nsd is None
    assert torch.all((output.dice >= 0) & (output.dice <= 1))


def test_background_channel_adds_one_mask_input():
    config = tiny_config(include_background_channel=True)
    assert config.mask_labels == [0, 1, 2] and config.in_channels == 1 + 3
    model = build_model(config).eval()
    output = model(*random_inputs(config, (16, 16, 16)))
    assert output.error_logits.shape[1] == 2  # error maps stay one per foreground class


def test_default_config_handles_the_hippocampus_patch_and_multiple_modalities():
    config = ModelConfig(modalities=["T1", "T2"])
    model = build_model(config).eval()
    with torch.inference_mode():
        output = model(*random_inputs(config, tuple(config.patch_size_zyx), batch=1))
    assert output.error_logits.shape == (1, 2, *config.patch_size_zyx)


def test_every_parameter_receives_a_gradient_from_the_three_losses():
    config = tiny_config()
    model = build_model(config).train()
    image, mask = random_inputs(config, (16, 16, 16))
    output = model(image, mask)
    loss = output.error_logits.mean() + output.dice.sum() + output.nsd.sum()
    loss.backward()
    without = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert without == []


def test_one_hot_has_one_channel_per_listed_label():
    seg = torch.tensor([[[0, 1, 2, 5]]])
    encoded = one_hot(seg, [1, 2])
    assert encoded.shape == (1, 2, 1, 1, 4)
    assert encoded[0, :, 0, 0].tolist() == [[0, 1, 0, 0], [0, 0, 1, 0]]


def test_one_hot_refuses_float_labels():
    with pytest.raises(ValueError, match="integer"):
        one_hot(torch.zeros(2, 2, 2), [1])


def test_forward_refuses_sizes_not_divisible_by_the_total_stride():
    config = tiny_config()
    model = build_model(config).eval()
    with pytest.raises(ValueError, match="divisible"):
        model(*random_inputs(config, (15, 16, 16)))


def test_forward_refuses_wrong_channel_counts():
    config = tiny_config()
    model = build_model(config).eval()
    image, mask = random_inputs(config, (16, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        model(torch.cat([image, image], dim=1), mask)


@pytest.mark.parametrize("overrides, message", [
    ({"classes": {}}, "classes must name 1 to"),
    ({"modalities": []}, "modalities must have 1 to"),
    ({"patch_size_zyx": [50, 64, 48]}, "not divisible"),
    ({"blocks_per_stage": [1, 1]}, "one entry per stage"),
    ({"decoder_from_stage": 7}, "decoder_from_stage"),
    ({"normalization": "magic"}, "normalization"),
    ({"window_overlap": 1.0}, "window_overlap"),
])
def test_invalid_configurations_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ModelError, match=message):
        ModelConfig(**overrides)


def test_config_round_trips_through_json_data():
    config = tiny_config(classes={1: "liver", 3: "tumour"}, target_spacing_zyx_mm=[2.5, 0.8, 0.8])
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_empty_config_is_refused_not_replaced_by_defaults():
    with pytest.raises(ModelError, match="empty"):
        ModelConfig.from_dict({})


def test_unknown_config_keys_are_kept_as_extra():
    data = ModelConfig().to_dict()
    data["future_option"] = 3
    assert ModelConfig.from_dict(data).extra["future_option"] == 3


def test_default_config_is_far_cheaper_than_the_published_qcresunet_size():
    with torch.device("meta"):  # shapes only: counting needs no weights or arithmetic
        default = build_model(ModelConfig()).eval()
        reference = build_model(reference_qcresunet_config()).eval()
    assert 15e6 < count_parameters(reference) < 18e6  # QCResUNet paper: 16.6 M
    assert count_parameters(default) < 0.1 * count_parameters(reference)
    size = (32, 32, 32)  # cost per voxel is size independent; keep the reference forward small
    assert count_conv_macs(default, size) < 0.2 * count_conv_macs(reference, size)


# --- the truth parameterisation and test-time augmentation --------------------------------------------

def test_a_truth_output_network_derives_each_class_error_from_its_estimated_truth_and_the_mask():
    config = tiny_config(output="truth")
    model = build_model(config).eval()
    image, mask = random_inputs(config, (16, 16, 16))
    with torch.no_grad():
        output = model(image, mask)
    assert output.truth_logits.shape == (2, 3, 16, 16, 16)
    prob = torch.softmax(output.truth_logits, 1)[:, 1:]
    expected = mask * (1 - prob) + (1 - mask) * prob
    torch.testing.assert_close(torch.sigmoid(output.error_logits), expected, atol=1e-5, rtol=1e-4)


def test_the_truth_temperature_softens_the_estimated_truth():
    image, mask = random_inputs(tiny_config(), (16, 16, 16))
    sharp = build_model(tiny_config(output="truth")).eval()
    soft = build_model(tiny_config(output="truth", truth_temperature=4.0)).eval()
    soft.load_state_dict(sharp.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(soft(image, mask).truth_logits, sharp(image, mask).truth_logits / 4.0)


def test_flip_augmented_predictions_are_flip_equivariant():
    config = tiny_config(output="truth", tta_flips=[[2]])
    model = with_test_time_augmentation(build_model(config).eval())
    image, mask = random_inputs(config, (16, 16, 16), batch=1)
    with torch.no_grad():
        plain = model(image, mask).error_logits
        mirrored = model(torch.flip(image, [4]), torch.flip(mask, [4])).error_logits
    torch.testing.assert_close(torch.flip(mirrored, [4]), plain, atol=1e-4, rtol=1e-4)


def test_a_model_without_flips_runs_as_it_is():
    model = build_model(tiny_config())
    assert with_test_time_augmentation(model) is model


@pytest.mark.parametrize("flips", [[[3]], [[]], [[1, 1]], "x"])
def test_invalid_flip_axes_are_refused(flips):
    with pytest.raises(ModelError, match="tta_flips"):
        tiny_config(tta_flips=flips)


def test_an_unknown_output_kind_is_refused():
    with pytest.raises(ModelError, match="output"):
        tiny_config(output="both")
