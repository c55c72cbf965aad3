"""FSNet: full-duplex appearance/motion network (Ji et al., ICCV 2021).

Computation (identical to the released network):

* three backbone streams: appearance (``_rgb``, fed the image), motion (``_flow``, fed the flow
  image) and merge (no suffix). The merge stream never sees an image: it starts from the RCAM
  fusion of the two stems (after the stem ReLU, before the max-pool) and at each of layer1..4 adds
  ``x * att_flow(y) + y * att_rgb(x)`` to its own layer output;
* ``reduce_a*`` reduce the merge-stream features and ``reduce_m*`` the motion-stream features to
  ``channel`` channels; four stacked BPMs exchange information between them;
* two PPM decoders give appearance (``pred_s``) and motion (``pred_e``) logits at 1/4 resolution,
  upsampled bilinearly (``align_corners=True``) to the input size.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from lib.backbones.streams import SPECS, ThreeStreamBackbone
from lib.head import BPM, BasicConv2d, Decoder, DimReduce, channel_attention, resize

#: Channels of the five fused levels: stem, layer1..layer4.
LEVEL_CHANNELS = (64, 256, 512, 1024, 2048)
SIZE_MULTIPLE = 32

#: Valid values of the :class:`FSNetConfig` choice fields, the released network's first.
BACKBONE_CHOICES = tuple(SPECS)
RCAM_CHOICES = ("duplex", "app2mo", "mo2app", "concat")
BPM_CHOICES = ("duplex", "to_motion", "to_appearance")
STREAM_CHOICES = ("both", "appearance", "motion")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class FSNetConfig:
    """The architecture of an FSNet variant; the defaults are the released network.

    * ``backbone``: ``"res2net50"`` or ``"resnet50"``; ``channel``: head width (a positive multiple
      of 4, the PPM splits it in four);
    * ``num_bpm``: number of stacked BPMs ``bpm1..bpmN`` (N >= 0);
    * ``rcam``: ``"duplex"`` (App <=> Mo), ``"app2mo"`` (App => Mo), ``"mo2app"`` (App <= Mo) or
      ``"concat"`` (vanilla fusion: channel concatenation and one convolution);
    * ``bpm``: ``"duplex"``, ``"to_motion"`` ((App+Mo) => Mo) or ``"to_appearance"`` ((App+Mo) <= Mo);
    * ``streams``: ``"both"``, ``"appearance"`` (frames only) or ``"motion"`` (flow only).

    Invalid values and meaningless combinations (a fusion or BPM setting with one stream, a BPM
    direction without BPMs) raise ``ValueError`` naming the valid choices.
    """

    backbone: str = "res2net50"
    channel: int = 32
    num_bpm: int = 4
    rcam: str = "duplex"
    bpm: str = "duplex"
    streams: str = "both"

    def __post_init__(self) -> None:
        for name, choices in (("backbone", BACKBONE_CHOICES), ("rcam", RCAM_CHOICES),
                              ("bpm", BPM_CHOICES), ("streams", STREAM_CHOICES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"FSNetConfig.{name}={getattr(self, name)!r} is not valid; "
                                 f"choose one of {', '.join(choices)}")
        if not _is_int(self.channel) or self.channel < 4 or self.channel % 4:
            raise ValueError(f"FSNetConfig.channel={self.channel!r} is not valid; choose a positive "
                             f"multiple of 4 (the released network uses 32)")
        if not _is_int(self.num_bpm) or self.num_bpm < 0:
            raise ValueError(f"FSNetConfig.num_bpm={self.num_bpm!r} is not valid; choose an "
                             f"integer >= 0 (the released network uses 4)")
        default = FSNetConfig.__dataclass_fields__
        if self.streams != "both":
            changed = [name for name in ("num_bpm", "rcam", "bpm")
                       if getattr(self, name) != default[name].default]
            if changed:
                raise ValueError(
                    f"FSNetConfig(streams={self.streams!r}) has no fusion and no BPMs, so "
                    f"{', '.join(f'{n}={getattr(self, n)!r}' for n in changed)} does not apply; "
                    f"leave num_bpm, rcam and bpm at their defaults (4, 'duplex', 'duplex') or use "
                    f"streams='both'")
        if self.num_bpm == 0 and self.bpm != "duplex":
            raise ValueError(f"FSNetConfig(num_bpm=0) has no BPMs, so bpm={self.bpm!r} does not "
                             f"apply; leave bpm='duplex' or choose num_bpm >= 1")

    @property
    def is_released(self) -> bool:
        """Whether this is the released architecture (any backbone and width)."""
        return (self.num_bpm, self.rcam, self.bpm, self.streams) == (4, "duplex", "duplex", "both")


def make_config(config: FSNetConfig | str | None = None, **overrides: Any) -> FSNetConfig:
    """``config`` (or the defaults; a string is the backbone) with ``overrides`` applied.

    Unknown field names raise ``ValueError`` listing the fields.
    """
    names = [f.name for f in fields(FSNetConfig)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"unknown FSNetConfig field(s) {unknown}; the fields are {names}")
    if isinstance(config, str):
        overrides = {"backbone": config, **overrides}
        config = None
    return replace(config or FSNetConfig(), **overrides)


def _nearest_valid(size: int) -> int:
    return max(SIZE_MULTIPLE, int(round(size / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def check_inputs(image: Tensor, flow: Tensor) -> None:
    """Raise ``ValueError`` unless image and flow are equal-shape ``(N,3,H,W)`` with H, W % 32 == 0."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"FSNet expects image of shape (N, 3, H, W); got {tuple(image.shape)}")
    if flow.shape != image.shape:
        raise ValueError(
            f"FSNet expects flow with the image's shape {tuple(image.shape)}; "
            f"got {tuple(flow.shape)}. Resize both to the same size."
        )
    height, width = image.shape[2:]
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(
            f"FSNet needs height and width that are multiples of {SIZE_MULTIPLE} (the decoder "
            f"doubles sizes level by level); got {height}x{width}. Nearest valid size: "
            f"{_nearest_valid(height)}x{_nearest_valid(width)} (HxW); resize the inputs to it."
        )


class FSNet(nn.Module):
    """FSNet with a ResNet-50 or Res2Net-50 (v1b 26w4s) backbone.

    ``forward(image, flow) -> (pred_s, pred_e)``: appearance/fused and motion logits, each
    ``(N, 1, H, W)``. With ``backbone="resnet50"`` the ``state_dict`` matches the released
    checkpoint key for key (after stripping ``module.``).
    """

    def __init__(self, config: FSNetConfig | str | None = None, **overrides: Any) -> None:
        """``FSNet(FSNetConfig(...))``, ``FSNet(backbone="resnet50", channel=32)`` or
        ``FSNet("resnet50")``: see :func:`make_config`."""
        super().__init__()
        self.config = make_config(config, **overrides)
        backbone, channel = self.config.backbone, self.config.channel
        self.backbone_name = backbone
        self.channel = channel
        self.resnet = ThreeStreamBackbone(backbone)
        for level, channels in enumerate(LEVEL_CHANNELS):
            setattr(self, f"atten_rgb_{level}", channel_attention(channels))
            setattr(self, f"atten_flow_{level}", channel_attention(channels))
            if level == 0:
                # Never run (the merge stream pools with resnet.maxpool) and stateless; kept so the
                # module tree mirrors the official FSNet, which registers it at this point.
                self.maxpool_m = nn.MaxPool2d(3, stride=2, padding=1)
        for prefix in ("reduce_a", "reduce_m"):
            for level, channels in enumerate(LEVEL_CHANNELS[1:], start=1):
                setattr(self, f"{prefix}{level}", DimReduce(channels, channel))
        for index in range(1, self.config.num_bpm + 1):
            setattr(self, f"bpm{index}", BPM(channel))
        self.output_s = Decoder(channel)
        self.output_e = Decoder(channel)
        # Never run in the forward; part of the released checkpoint format.
        self.RGBF_conv3 = BasicConv2d(2048, 1024, 3, padding=1)
        self.reset_parameters()
        # The merge stream's own stem and RGBF_conv3 never run: freeze them so optimisers, weight
        # decay and DDP ignore them, while a strict load of the release still finds their keys.
        for module in (*self.resnet.unused_stem(), self.RGBF_conv3):
            module.requires_grad_(False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Official init: every conv weight ~ N(0, 0.01), BatchNorm weight 1 / bias 0.

        Conv biases keep PyTorch's default init. ImageNet weights are loaded separately with
        :func:`lib.backbones.load_imagenet_weights`.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0.0, 0.01)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()

    def _fuse(self, level: int, x: Tensor, y: Tensor, merged: Tensor | None = None) -> Tensor:
        """RCAM fusion ``[merged +] x * att_flow(y) + y * att_rgb(x)`` at one level."""
        att_rgb = getattr(self, f"atten_rgb_{level}")(x)
        att_flow = getattr(self, f"atten_flow_{level}")(y)
        fused = x * att_flow
        if merged is not None:
            fused += merged  # in place on a fresh tensor; equals merged + x * att_flow exactly
        fused += y * att_rgb
        return fused

    def encode(self, image: Tensor, flow: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Run the three streams; return merge features and motion features of layer1..4."""
        x = self.resnet.run_stem(image, "_rgb")
        y = self.resnet.run_stem(flow, "_flow")
        m = self._fuse(0, x, y)
        x = self.resnet.run_maxpool(x, "_rgb")
        y = self.resnet.run_maxpool(y, "_flow")
        m = self.resnet.run_maxpool(m, "")
        merged, motion = [], []
        for level in range(1, len(LEVEL_CHANNELS)):
            x = self.resnet.run_layer(x, level, "_rgb")
            y = self.resnet.run_layer(y, level, "_flow")
            m = self._fuse(level, x, y, self.resnet.run_layer(m, level, ""))
            merged.append(m)
            motion.append(y)
        return merged, motion

    def refine(
        self, merged: Sequence[Tensor], motion: Sequence[Tensor], with_motion: bool = True
    ) -> tuple[list[Tensor], list[Tensor] | None]:
        """DimReduce + the four BPMs. ``with_motion=False`` skips the last BPM's motion side."""
        s = [getattr(self, f"reduce_a{k}")(f) for k, f in enumerate(merged, start=1)]
        e: list[Tensor] | None = [
            getattr(self, f"reduce_m{k}")(f) for k, f in enumerate(motion, start=1)
        ]
        for index in range(1, self.config.num_bpm + 1):
            bpm = getattr(self, f"bpm{index}")
            last = index == self.config.num_bpm
            s, e = bpm.appearance(s, e), (bpm.motion(s, e) if with_motion or not last else None)
        return s, e

    def forward(self, image: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(pred_s, pred_e)`` logits of shape ``(N, 1, H, W)``."""
        check_inputs(image, flow)
        s, e = self.refine(*self.encode(image, flow))
        size = image.shape[2:]
        return resize(self.output_s(s), size), resize(self.output_e(e), size)

    def predict_appearance(self, image: Tensor, flow: Tensor) -> Tensor:
        """``pred_s`` only: the motion decoder and the last BPM's motion side are not computed."""
        check_inputs(image, flow)
        s, _ = self.refine(*self.encode(image, flow), with_motion=False)
        return resize(self.output_s(s), image.shape[2:])
