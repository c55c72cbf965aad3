"""FSNet: full-duplex appearance/motion network (Ji et al., ICCV 2021), and its ablation variants.

Computation of the default :class:`FSNetConfig` (identical to the released network):

* three backbone streams: appearance (``_rgb``, fed the image), motion (``_flow``, fed the flow
  image) and merge (no suffix). The merge stream never sees an image: it starts from the RCAM
  fusion of the two stems (after the stem ReLU, before the max-pool) and at each of layer1..4 adds
  ``x * att_flow(y) + y * att_rgb(x)`` to its own layer output;
* ``reduce_a*`` reduce the merge-stream features and ``reduce_m*`` the motion-stream features to
  ``channel`` channels; four stacked BPMs exchange information between them;
* two PPM decoders give appearance (``pred_s``) and motion (``pred_e``) logits at 1/4 resolution,
  upsampled bilinearly (``align_corners=True``) to the input size.

The other configurations (the paper's ablations, docs/model.md "Variants") change the fusion
(simplex RCAM or concatenation + one convolution), the number and direction of the BPMs, or keep
one stream; each holds only the modules it runs, under the released names and shapes.
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
#: Backbone streams and DimReduce sets of each ``streams`` value.
_BACKBONE_STREAMS = {"both": ("_rgb", "_flow", ""), "appearance": ("_rgb",), "motion": ("_flow",)}
_REDUCE_PREFIXES = {"both": ("reduce_a", "reduce_m"), "appearance": ("reduce_a",),
                    "motion": ("reduce_m",)}


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
    """FSNet with a ResNet-50 or Res2Net-50 (v1b 26w4s) backbone; any :class:`FSNetConfig`.

    ``forward(image, flow) -> (pred_s, pred_e)``: appearance/fused and motion logits, each
    ``(N, 1, H, W)``. With the default configuration and ``backbone="resnet50"`` the
    ``state_dict`` matches the released checkpoint key for key (after stripping ``module.``).
    A single-stream variant has one decoder: ``pred_s`` is its prediction and ``pred_e`` the same
    logits detached, so the two-term training loss trains it with one BCE term.
    """

    def __init__(self, config: FSNetConfig | str | None = None, **overrides: Any) -> None:
        """``FSNet(FSNetConfig(...))``, ``FSNet(backbone="resnet50", channel=32)`` or
        ``FSNet("resnet50")``: see :func:`make_config`."""
        super().__init__()
        self.config = c = make_config(config, **overrides)
        self.backbone_name, self.channel = c.backbone, c.channel
        released, both = c.is_released, c.streams == "both"
        self.resnet = ThreeStreamBackbone(c.backbone, _BACKBONE_STREAMS[c.streams], released)
        for level, channels in enumerate(LEVEL_CHANNELS if both else ()):
            self._add_fusion(level, channels)
            if level == 0 and released:
                # Never run (the merge stream pools with resnet.maxpool) and stateless; kept so the
                # module tree mirrors the official FSNet, which registers it at this point.
                self.maxpool_m = nn.MaxPool2d(3, stride=2, padding=1)
        for prefix in _REDUCE_PREFIXES[c.streams]:
            for level, channels in enumerate(LEVEL_CHANNELS[1:], start=1):
                setattr(self, f"{prefix}{level}", DimReduce(channels, c.channel))
        for index in range(1, (c.num_bpm if both else 0) + 1):
            setattr(self, f"bpm{index}", BPM(c.channel, appearance=c.bpm != "to_motion",
                                             motion=c.bpm != "to_appearance"))
        if c.streams != "motion":
            self.output_s = Decoder(c.channel)
        if c.streams != "appearance":
            self.output_e = Decoder(c.channel)
        if released:
            # Never run in the forward; part of the released checkpoint format.
            self.RGBF_conv3 = BasicConv2d(2048, 1024, 3, padding=1)
        self.reset_parameters()
        # The merge stream's own stem and RGBF_conv3 never run: freeze them so optimisers, weight
        # decay and DDP ignore them, while a strict load of the release still finds their keys.
        for module in (*self.resnet.unused_stem(), *([self.RGBF_conv3] if released else [])):
            module.requires_grad_(False)

    def _add_fusion(self, level: int, channels: int) -> None:
        """The fusion modules of one level: RCAM attention (the kept directions) or one conv."""
        rcam = self.config.rcam
        if rcam == "concat":
            setattr(self, f"fuse_{level}", nn.Conv2d(2 * channels, channels, 1))
            return
        if rcam in ("duplex", "app2mo"):
            setattr(self, f"atten_rgb_{level}", channel_attention(channels))
        if rcam in ("duplex", "mo2app"):
            setattr(self, f"atten_flow_{level}", channel_attention(channels))

    def unused_at_prediction(self) -> list[str]:
        """Top-level modules :meth:`predict_appearance` never runs (the fast path drops them)."""
        names = ["output_e"] if self.config.streams == "both" else []
        return names + [name for name in ("RGBF_conv3",) if hasattr(self, name)]

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
        """Fusion at one level, ``[merged +]`` one of (by ``config.rcam``):
        duplex ``x * att_flow(y) + y * att_rgb(x)``; app2mo ``x + y * att_rgb(x)``;
        mo2app ``x * att_flow(y) + y``; concat ``fuse(cat(x, y))``."""
        if self.config.rcam == "concat":
            fused = getattr(self, f"fuse_{level}")(torch.cat((x, y), 1))
            return fused if merged is None else merged + fused
        att_flow = getattr(self, f"atten_flow_{level}", None)
        att_rgb = getattr(self, f"atten_rgb_{level}", None)
        if att_flow is None:  # appearance enters ungated
            fused = x if merged is None else merged + x
        else:
            fused = x * att_flow(y)
            if merged is not None:
                fused += merged  # in place on a fresh tensor; equals merged + x * att_flow exactly
        gated_y = y if att_rgb is None else y * att_rgb(x)
        if fused is x:
            return x + gated_y
        fused += gated_y
        return fused

    def encode(self, image: Tensor, flow: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Run the streams; return the features of layer1..4 that the fused/appearance side and
        the motion side read: merge and motion features, or the one stream's features twice."""
        if self.config.streams != "both":
            stream, x = ("_rgb", image) if self.config.streams == "appearance" else ("_flow", flow)
            x = self.resnet.run_maxpool(self.resnet.run_stem(x, stream), stream)
            features = []
            for level in range(1, len(LEVEL_CHANNELS)):
                x = self.resnet.run_layer(x, level, stream)
                features.append(x)
            return features, features
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

    def _reduce(self, prefix: str, features: Sequence[Tensor]) -> list[Tensor]:
        return [getattr(self, f"{prefix}{k}")(f) for k, f in enumerate(features, start=1)]

    def refine(
        self, merged: Sequence[Tensor], motion: Sequence[Tensor], with_motion: bool = True
    ) -> tuple[list[Tensor] | None, list[Tensor] | None]:
        """DimReduce + the BPMs; ``(s, e)``, ``None`` for a side the variant lacks.

        ``with_motion=False`` skips motion-side work that ``pred_s`` does not need (the last BPM's
        motion side; every motion side of ``to_motion`` BPMs). A single-stream variant reduces its
        one stream (``reduce_a*`` for appearance, ``reduce_m*`` for motion) and has no BPMs.
        """
        c = self.config
        if c.streams != "both":
            return ((self._reduce("reduce_a", merged), None) if c.streams == "appearance"
                    else (None, self._reduce("reduce_m", motion)))
        reads_motion = c.bpm != "to_motion"  # whether a BPM's appearance side reads e
        s = self._reduce("reduce_a", merged)
        e = self._reduce("reduce_m", motion) if with_motion or (c.num_bpm and reads_motion) else None
        for index in range(1, c.num_bpm + 1):
            bpm = getattr(self, f"bpm{index}")
            keep_e = with_motion or (index < c.num_bpm and reads_motion)
            new_s = bpm.appearance(s, e) if bpm.updates_appearance else s
            e = (bpm.motion(s, e) if bpm.updates_motion else e) if keep_e else None
            s = new_s
        return s, e

    def main_logits(self, s: list[Tensor] | None, e: list[Tensor] | None) -> Tensor:
        """Logits at 1/4 resolution of the prediction the tools use (``pred_s``): the fused
        decoder's, or the one decoder of a single-stream variant."""
        return self.output_e(e) if self.config.streams == "motion" else self.output_s(s)

    def forward(self, image: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(pred_s, pred_e)`` logits of shape ``(N, 1, H, W)``."""
        check_inputs(image, flow)
        s, e = self.refine(*self.encode(image, flow))
        size = image.shape[2:]
        pred_s = resize(self.main_logits(s, e), size)
        if self.config.streams != "both":
            return pred_s, pred_s.detach()
        return pred_s, resize(self.output_e(e), size)

    def predict_appearance(self, image: Tensor, flow: Tensor) -> Tensor:
        """``pred_s`` only: the motion decoder and motion-side work it does not need are skipped."""
        check_inputs(image, flow)
        s, e = self.refine(*self.encode(image, flow), with_motion=False)
        return resize(self.main_logits(s, e), image.shape[2:])
