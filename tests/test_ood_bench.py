"""bench.ood: its strangers are RGB photos, and it taps the end of each network stage as the network does."""
from __future__ import annotations

import numpy as np
import torch

from bench.ood import network_outputs, stage_ends, strangers
from model.net import LiteNet, SpotNet


def test_the_strangers_are_rgb_photos_whole_quartered_and_shrunk():
    photos = strangers()
    assert len(photos) == 5 * 5 + 6 * 2 + 2  # 5 photos and their quarters, 12 faces from afar, text, landscape
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in photos.values())
    assert photos["china, quarter 4"].shape == (213, 320, 3)  # 427 x 640 halved


def test_stage_ends_are_where_the_channel_count_changes():
    assert stage_ends(LiteNet().eval().features, 64) == [(0, 32), (1, 16), (3, 24), (5, 40), (8, 80), (11, 112),
                                                         (15, 192), (16, 320), (17, 1280)]
    assert stage_ends(SpotNet().eval().features, 64) == [(0, 32), (2, 48), (4, 96), (6, 160), (7, 256)]


def test_the_taps_are_the_networks_own_outputs():
    net = LiteNet().eval()
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 64, 64)).astype(np.float32)
    logits, taps = network_outputs(net, x, [LiteNet.ood_layer, 17])
    with torch.no_grad():
        z, maps, ood_features = net.forward_with_maps(torch.from_numpy(x))
    assert np.allclose(logits, z.numpy(), atol=1e-5)
    assert np.allclose(taps[LiteNet.ood_layer], ood_features.numpy(), atol=1e-5)
    assert np.allclose(taps[17], maps.mean(dim=(2, 3)).numpy(), atol=1e-5)
