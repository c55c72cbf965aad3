"""Random, well-conditioned FSNet weights for numerical checks (tests and bench).

The official init (conv weights ~ N(0, 0.01), identity BatchNorm) makes the output almost
constant, so a broken fold or a mis-wired branch would hide below 1e-4. Unit-variance weights
overflow instead, because the BPM multiplies up to five feature maps. ``conv_gain=0.8`` gives
outputs that vary by ~0.05 across pixels while float32 stays accurate to ~1e-6.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_weights(model: nn.Module, seed: int = 0, conv_gain: float = 0.8) -> nn.Module:
    """Give every conv ``N(0, conv_gain^2 / fan_in)`` weights and every BN random affine/stats."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * conv_gain / fan_in**0.5)
        elif isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model
