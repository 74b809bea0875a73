"""SpotNet: a small plain CNN for 3-class skin-spot triage on a CPU.

Eight 3x3 conv layers with batch norm, halving the resolution five times,
then global average pooling and one linear layer. Keeping the head a single
linear layer over pooled features makes the class activation map exact and
cheap (`model.predictor.class_activation_map`): no gradients needed, so the same heatmap
comes out of PyTorch and ONNX Runtime.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

# (out_channels, stride) per conv layer; the stem is the first entry.
LAYERS = ((32, 2), (48, 2), (48, 1), (96, 2), (96, 1), (160, 2), (160, 1), (256, 2))


class SpotNet(nn.Module):
    def __init__(self, num_classes: int = 3, dropout: float = 0.2):
        super().__init__()
        layers, c_in = [], 3
        for c_out, stride in LAYERS:
            layers.append(Conv2dNormActivation(c_in, c_out, kernel_size=3, stride=stride))  # conv, BN, ReLU
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, C) pooled features the head sees."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pooled(x)))

    def forward_with_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the last feature maps (N, C, h, w), for the heatmap and the OOD score."""
        maps = self.features(x)
        return self.head(maps.mean(dim=(2, 3))), maps


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(image_size: int) -> int:
    """Multiply-accumulates x 2 for one image: convolutions and the head (BN folds away)."""
    flops, c_in, side = 0, 3, image_size
    for c_out, stride in LAYERS:
        side = (side + stride - 1) // stride
        flops += 2 * side * side * c_out * c_in * 9
        c_in = c_out
    return flops + 2 * c_in * 3
