"""FSNet head: channel attention (RCAM), DimReduce, BPM and the PPM decoder.

Every ``BasicConv2d`` here is a convolution followed by BatchNorm with **no activation**, exactly as
in the released network; the only non-linearities of the head are the attention sigmoids and the
element-wise products inside the BPM. Module names follow the released checkpoint's keys.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize with ``align_corners=True`` (the only interpolation FSNet uses)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class BasicConv2d(nn.Module):
    """Convolution (no bias) followed by BatchNorm, without activation (keys ``conv_bn.0/1``)."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.conv_bn = nn.Sequential(
            nn.Conv2d(in_planes, out_planes, kernel_size, padding=padding, bias=False),
            nn.BatchNorm2d(out_planes),
        )

    def fold_pairs(self) -> list[tuple[str, str]]:
        """The (conv, BatchNorm) pair, for BN folding at inference."""
        return [("conv_bn.0", "conv_bn.1")]

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_bn(x)


def channel_attention(channels: int) -> nn.Sequential:
    """RCAM channel attention: global average pool, 1x1 conv with bias, sigmoid (keys ``1.*``)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1), nn.Sigmoid())


class DimReduce(nn.Module):
    """1x1 then two 3x3 ``BasicConv2d`` units mapping a backbone level to ``out_channel``."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            BasicConv2d(in_channel, out_channel, 1),
            BasicConv2d(out_channel, out_channel, 3, padding=1),
            BasicConv2d(out_channel, out_channel, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.reduce(x)


class ResizeConv(nn.Module):
    """Resize ``x`` to ``target``'s size and apply a 1x1 ``BasicConv2d``.

    When the sizes already match, ``x`` is returned untouched and the convolution is skipped,
    as in the released network.
    """

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.conv = BasicConv2d(channel, channel, 1)

    def forward(self, x: Tensor, target: Tensor) -> Tensor:
        if x.shape[2:] == target.shape[2:]:
            return x
        return self.conv(resize(x, target.shape[2:]))


def _two_convs(in_channel: int, channel: int) -> nn.Sequential:
    return nn.Sequential(
        BasicConv2d(in_channel, channel, 3, padding=1),
        BasicConv2d(channel, channel, 3, padding=1),
    )


# Pairs (finer level i, coarser level j) in the order the resize units conv1..conv6 (appearance
# side) and conv7..conv12 (motion side) are numbered.
_LEVEL_PAIRS = tuple((i, j) for i in range(4) for j in range(i + 1, 4))


class BPM(nn.Module):
    """Bidirectional purification module over four appearance and four motion levels.

    Appearance side: ``s_i + conv_f{i+1}(cat(s_i, e_i, resized coarser e_j))``.
    Motion side: ``e_i + conv_f{i+5}(e_i * s_i * prod(resized coarser s_j))``.
    Both sides read the *input* features of this unit. A simplex unit (``appearance=False`` or
    ``motion=False``) has no weights for the side it leaves out, and that side passes through
    :meth:`forward` unchanged; the kept side's modules keep their names (``conv7..12`` and
    ``conv_f5..8`` are the motion side's).
    """

    def __init__(self, channel: int, appearance: bool = True, motion: bool = True) -> None:
        super().__init__()
        self.updates_appearance, self.updates_motion = appearance, motion
        pairs = len(_LEVEL_PAIRS)
        for side, kept in enumerate((appearance, motion)):
            for index in range(side * pairs + 1, (side + 1) * pairs + 1):
                if kept:
                    setattr(self, f"conv{index}", ResizeConv(channel))
        for level in range(4):
            if appearance:
                setattr(self, f"conv_f{level + 1}", _two_convs((5 - level) * channel, channel))
        for level in range(4):
            if motion:
                setattr(self, f"conv_f{level + 5}", _two_convs(channel, channel))

    def _resize_unit(self, side: int, pair_index: int) -> ResizeConv:
        return getattr(self, f"conv{side * len(_LEVEL_PAIRS) + pair_index + 1}")

    def appearance(self, s: Sequence[Tensor], e: Sequence[Tensor]) -> list[Tensor]:
        """Refined appearance features (uses the motion features as guidance)."""
        parts: list[list[Tensor]] = [[s[i], e[i]] for i in range(4)]
        for pair_index, (i, j) in enumerate(_LEVEL_PAIRS):
            parts[i].append(self._resize_unit(0, pair_index)(e[j], s[i]))
        return [
            s[i] + getattr(self, f"conv_f{i + 1}")(torch.cat(parts[i], 1)) for i in range(4)
        ]

    def motion(self, s: Sequence[Tensor], e: Sequence[Tensor]) -> list[Tensor]:
        """Refined motion features (gated by the appearance features)."""
        products = [e[i] * s[i] for i in range(4)]
        for pair_index, (i, j) in enumerate(_LEVEL_PAIRS):
            products[i] = products[i] * self._resize_unit(1, pair_index)(s[j], e[i])
        return [e[i] + getattr(self, f"conv_f{i + 5}")(products[i]) for i in range(4)]

    def forward(
        self, s: Sequence[Tensor], e: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """``(appearance, motion)`` outputs; a side this unit does not update is returned as is."""
        return (self.appearance(s, e) if self.updates_appearance else list(s),
                self.motion(s, e) if self.updates_motion else list(e))


class PyramidPooling(nn.Module):
    """PPM: pools of size 1, 2, 3, 6 -> 1x1 conv to C/4 -> upsample -> concat -> 1x1 conv."""

    BINS = (1, 2, 3, 6)

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        inter_channels = in_channels // 4
        for index in range(1, len(self.BINS) + 1):
            setattr(self, f"conv{index}", BasicConv2d(in_channels, inter_channels, 1))
        self.out = BasicConv2d(in_channels * 2, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[2:]
        feats = [x]
        for index, bins in enumerate(self.BINS, start=1):
            pooled = F.adaptive_avg_pool2d(x, bins)
            feats.append(resize(getattr(self, f"conv{index}")(pooled), size))
        return self.out(torch.cat(feats, 1))


class Decoder(nn.Module):
    """Coarse-to-fine decoder: PPM at each level, x2 upsampling, concat, fuse; 1-channel logits."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        for index in range(1, 4):
            setattr(self, f"conv_upsample{index}", BasicConv2d(channel, channel, 3, padding=1))
        for index in range(1, 5):
            setattr(self, f"ppm{index}", PyramidPooling(channel, channel))
        for index in range(1, 4):
            setattr(
                self,
                f"conv_cat{index}",
                nn.Sequential(
                    BasicConv2d(2 * channel, 2 * channel, 3, padding=1),
                    BasicConv2d(2 * channel, channel, 1),
                ),
            )
        self.output = nn.Sequential(
            BasicConv2d(channel, channel, 3, padding=1), nn.Conv2d(channel, 1, 1)
        )

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """``feats`` = levels 1..4 (finest first); returns logits at the finest level's size."""
        x = self.ppm4(feats[3])
        for step, finer in enumerate((feats[2], feats[1], feats[0]), start=1):
            up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            x = torch.cat((finer, getattr(self, f"conv_upsample{step}")(up)), 1)
            x = getattr(self, f"conv_cat{step}")(x)
            x = getattr(self, f"ppm{4 - step}")(x)
        return self.output(x)
