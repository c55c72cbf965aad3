"""Fast inference path: appearance prediction only, BatchNorm folded, channels_last.

At test time only ``pred_s`` is used, so the motion decoder (``output_e``) and the last BPM's
motion side are not computed, and the never-used ``RGBF_conv3`` is dropped from the copy. Every
BatchNorm that directly follows a convolution (all of them: the head has no activation between
conv and BN either) is folded into that convolution.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from lib.fsnet import FSNet


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every (conv, BN) pair declared by a submodule's ``fold_pairs()``; return the count.

    ``model`` must be in eval mode (running statistics are folded). Each BN becomes Identity.
    """
    pairs = [
        (f"{prefix}.{conv}" if prefix else conv, f"{prefix}.{bn}" if prefix else bn)
        for prefix, module in model.named_modules()
        if hasattr(module, "fold_pairs")
        for conv, bn in module.fold_pairs()
    ]
    for conv_path, bn_path in pairs:
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        _replace(model, conv_path, fuse_conv_bn_eval(conv, bn))
        _replace(model, bn_path, nn.Identity())
    return len(pairs)


class FastFSNet(nn.Module):
    """Eval-only FSNet wrapper: ``forward(image, flow) -> pred_s`` logits ``(N, 1, H, W)``."""

    def __init__(self, net: FSNet) -> None:
        super().__init__()
        self.net = net
        self.backbone_name = net.backbone_name

    def train(self, mode: bool = True) -> "FastFSNet":
        if mode:
            raise RuntimeError("FastFSNet is inference-only (BatchNorm is folded); use FSNet to train")
        return super().train(False)

    @torch.inference_mode()
    def forward(self, image: Tensor, flow: Tensor) -> Tensor:
        image = image.contiguous(memory_format=torch.channels_last)
        flow = flow.contiguous(memory_format=torch.channels_last)
        return self.net.predict_appearance(image, flow).contiguous()


def build_fast_model(model: FSNet) -> FastFSNet:
    """Return an eval-only copy of ``model`` for fast inference; ``model`` is left unchanged."""
    net = copy.deepcopy(model).eval()
    del net.output_e, net.RGBF_conv3
    fold_batchnorm(net)
    net.requires_grad_(False)
    net.to(memory_format=torch.channels_last)
    return FastFSNet(net).eval()
