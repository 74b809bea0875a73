"""The networks: the same interface, LiteNet's ImageNet start, counted FLOPs."""
from __future__ import annotations

import pytest
import torch

from model.net import ARCHITECTURES, LiteNet, SpotNet, build, count_flops, count_parameters
from training.train import imagenet_weights


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_both_networks_pool_one_linear_head_over_their_last_maps(arch):
    net = build(arch).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, maps, ood_features = net.forward_with_maps(x)
    assert logits.shape == (2, 3) and maps.shape[2:] == (2, 2)  # five halvings: 64 px -> 2 x 2 cells
    assert torch.allclose(net(x), logits, atol=1e-6)
    assert torch.allclose(net.head(maps.mean(dim=(2, 3))), logits, atol=1e-6)  # the heatmap's premise
    tapped = net.features[: net.ood_layer % len(net.features) + 1](x).mean(dim=(2, 3))
    assert torch.allclose(ood_features, tapped, atol=1e-6)
    with pytest.raises(ValueError, match="unknown architecture"):
        build("resnet50")


def test_the_distance_measures_spotnets_last_and_litenets_middle_features():
    x = torch.randn(1, 3, 64, 64)
    assert SpotNet().eval().forward_with_maps(x)[2].shape == (1, 256)  # the last block: the features the head sees
    assert LiteNet().eval().forward_with_maps(x)[2].shape == (1, 112)  # the end of stage 5 (bench/ood.md)


def test_litenet_starts_from_the_packaged_imagenet_weights(tmp_path):
    source = torch.load(imagenet_weights(), map_location="cpu", weights_only=True)
    net = LiteNet()
    net.load_imagenet(imagenet_weights())
    state = net.state_dict()
    assert torch.equal(state["features.0.0.weight"], source["_conv_stem.weight"])
    assert torch.equal(state["features.16.project.1.running_var"], source["_blocks.15._bn2.running_var"])
    assert torch.equal(state["features.17.0.weight"], source["_conv_head.weight"])
    ours = sorted(v.double().sum().item() for k, v in state.items() if not k.startswith("head."))
    theirs = sorted(v.double().sum().item() for k, v in source.items() if not k.startswith("_fc."))
    assert ours == pytest.approx(theirs)  # every tensor but the 1000-class layer's, each once
    assert count_parameters(net) == 3_374_851
    torch.save(SpotNet().state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not hold EfficientNet-Lite0"):
        LiteNet().load_imagenet(tmp_path / "other.pth")


def test_flops_are_counted_layer_by_layer():
    """SpotNet's convolutions by hand: 2 x output pixels x output channels x input channels x 3 x 3, plus the head."""
    flops, c_in, side = 0, 3, 112
    for c_out, stride in ((32, 2), (48, 2), (48, 1), (96, 2), (96, 1), (160, 2), (160, 1), (256, 2)):
        side = (side + stride - 1) // stride
        flops += 2 * side * side * c_out * c_in * 9
        c_in = c_out
    assert count_flops(SpotNet(), 112) == flops + 2 * 256 * 3
    lite = count_flops(LiteNet(), 224)
    assert 0.75e9 < lite < 0.85e9  # EfficientNet-Lite0 is quoted at about 0.4 G multiply-adds at 224 px
