"""The sliding window holds the query mask as bool channels: the same predictions as a float one-hot mask."""

from __future__ import annotations

import torch

from SegQCLib.network.config import ModelConfig
from SegQCLib.network.inference import mask_channels, sliding_window_predict
from SegQCLib.network.qcresunet import build_model, one_hot


def test_mask_channels_are_the_one_hot_channels_as_bool():
    seg = torch.randint(0, 4, (6, 7, 8), dtype=torch.int16)
    channels = mask_channels(seg, [1, 2])
    assert channels.dtype == torch.bool and channels.shape == (2, 6, 7, 8)
    assert torch.equal(channels.float(), one_hot(seg.long(), [1, 2])[0])


def test_a_bool_mask_predicts_exactly_what_a_float_mask_predicts():
    torch.manual_seed(0)
    model = build_model(ModelConfig(widths=[4, 8, 16, 32], full_res_width=4)).eval()
    seg = torch.zeros(64, 80, 64, dtype=torch.int16)
    seg[10:50, 20:60, 10:40] = 1
    seg[20:30, 30:40, 20:30] = 2
    image = torch.randn(1, 64, 80, 64)
    as_bool = sliding_window_predict(model, image, mask_channels(seg, [1, 2]), [48, 64, 48], 0.25,
                                     torch.device("cpu"), batch=2)
    as_float = sliding_window_predict(model, image, one_hot(seg.long(), [1, 2])[0], [48, 64, 48], 0.25,
                                      torch.device("cpu"), batch=2)
    assert as_bool.windows == as_float.windows > 1
    assert torch.equal(as_bool.prob, as_float.prob)
    assert as_bool.dice == as_float.dice and as_bool.nsd == as_float.nsd
