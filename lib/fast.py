"""Fast inference path: appearance prediction only, BatchNorm folded, channels_last.

At test time only ``pred_s`` is used, so the motion decoder (``output_e``) and the motion-side
work ``pred_s`` does not need (the last BPM's motion side) are not computed, and the never-used
``RGBF_conv3`` is dropped from the copy (``FSNet.unused_at_prediction``; any FSNet variant). Every
BatchNorm that directly follows a convolution (all of them: the head has no activation between
conv and BN either) is folded into that convolution.

Execution backends (``build_fast_model(model, backend=...)``):

* ``"eager"``: the folded network run op by op (any device, dtype, autocast).
* ``"jit"``: per input shape, the network is traced and frozen with TorchScript; on CPU the three
  backbone streams additionally go through ``torch.jit.optimize_for_inference`` (oneDNN layout,
  pre-packed weights, conv+ReLU / conv+add+ReLU fused). Traces are cached by (device, dtype,
  shape); the first call at a new shape pays the trace (seconds). Used for float32 without
  autocast; anything else falls back to eager.
* ``"auto"`` (default): ``"jit"`` for float32 CPU inputs, ``"eager"`` elsewhere (CUDA).

``dtype=torch.bfloat16`` stores the folded weights in bf16 once and runs eager in bf16 (inputs
cast on entry, logits upsampled in float32), where autocast would cast every weight on every
call; when that pays against the float32 default: docs/benchmarks.md.
:func:`cpu_has_native_bf16` tells whether the CPU has it.
"""
from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from lib.fsnet import FSNet, check_inputs
from lib.head import resize

FAST_BACKENDS = ("auto", "eager", "jit")


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively: AVX512-BF16 or AMX (x86, as torch detects them),
    or the BF16 extension (Arm, from ``/proc/cpuinfo``). Without it bf16 is emulated and slower
    than float32."""
    probes = (getattr(torch.cpu, name, None) for name in
              ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    if any(probe is not None and probe() for probe in probes):
        return True
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"^Features\s*:.*\bbf16\b", cpuinfo, re.MULTILINE) is not None


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


class _Encoder(nn.Module):
    """Traceable view of the three streams: ``(image, flow) -> (merged levels, motion levels)``."""

    def __init__(self, net: FSNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor, flow: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        merged, motion = self.net.encode(image, flow)
        return tuple(merged), tuple(motion)


class _Head(nn.Module):
    """Traceable view of DimReduce + BPMs + the ``pred_s`` decoder (logits at 1/4 resolution)."""

    def __init__(self, net: FSNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, merged: tuple[Tensor, ...], motion: tuple[Tensor, ...]) -> Tensor:
        return self.net.main_logits(*self.net.refine(merged, motion, with_motion=False))


def _trace(module: nn.Module, inputs: tuple, mkldnn: bool) -> torch.jit.ScriptModule:
    """Trace ``module`` on ``inputs`` and freeze it (plus oneDNN conversion when ``mkldnn``)."""
    with warnings.catch_warnings():
        # Shape-dependent Python branches get baked in (traces are cached per input shape), and
        # torch >= 2.9 flags TorchScript as deprecated; both warnings are expected here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.freeze(torch.jit.trace(module.eval(), inputs, check_trace=False))
        return torch.jit.optimize_for_inference(traced) if mkldnn else traced


class _Traced:
    """The two traced halves for one (device, dtype, shape); the final resize stays eager."""

    def __init__(self, net: FSNet, image: Tensor, flow: Tensor) -> None:
        # The oneDNN pass would hit adaptive pools the PPM uses (11x11 -> 2, 3, 6 bins), which it
        # does not support, so only the backbone streams (~90% of the FLOPs) are converted.
        self.encoder = _trace(_Encoder(net), (image, flow), mkldnn=image.device.type == "cpu")
        merged, motion = self.encoder(image, flow)
        self.head = _trace(_Head(net), (merged, motion), mkldnn=False)

    def __call__(self, image: Tensor, flow: Tensor) -> Tensor:
        return self.head(*self.encoder(image, flow))


class FastFSNet(nn.Module):
    """Eval-only FSNet wrapper: ``forward(image, flow) -> pred_s`` logits ``(N, 1, H, W)``."""

    def __init__(self, net: FSNet, backend: str = "auto", dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if backend not in FAST_BACKENDS:
            raise ValueError(f"Unknown fast-path backend {backend!r}; choose one of {FAST_BACKENDS}")
        self.net = net
        self.backend = backend if dtype == torch.float32 else "eager"
        self.dtype = dtype
        self.backbone_name = net.backbone_name
        self._traces: dict[tuple, _Traced] = {}

    def train(self, mode: bool = True) -> "FastFSNet":
        if mode:
            raise RuntimeError("FastFSNet is inference-only (BatchNorm is folded); use FSNet to train")
        return super().train(False)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "FastFSNet":
        self._traces.clear()  # traces hold the weights of the old device/dtype as constants
        return super()._apply(fn, recurse)

    def uses_jit(self, image: Tensor) -> bool:
        """Whether a call with ``image`` runs the traced path (else eager)."""
        if self.backend == "eager" or image.dtype != torch.float32:
            return False
        if torch.is_autocast_enabled(image.device.type):
            return False
        return self.backend == "jit" or image.device.type == "cpu"

    @torch.inference_mode()
    def forward(self, image: Tensor, flow: Tensor) -> Tensor:
        check_inputs(image, flow)
        image = image.contiguous(memory_format=torch.channels_last)
        flow = flow.contiguous(memory_format=torch.channels_last)
        if self.dtype != torch.float32:
            merged, motion = self.net.encode(image.to(self.dtype), flow.to(self.dtype))
            s, _ = self.net.refine(merged, motion, with_motion=False)
            return resize(self.net.output_s(s).float(), image.shape[2:]).contiguous()
        if not self.uses_jit(image):
            return self.net.predict_appearance(image, flow).contiguous()
        key = (image.device, image.dtype, tuple(image.shape))
        if key not in self._traces:
            with torch.inference_mode(False), torch.no_grad():
                self._traces[key] = _Traced(self.net, image.clone(), flow.clone())
        return resize(self._traces[key](image, flow), image.shape[2:]).contiguous()


def build_fast_model(model: FSNet, backend: str = "auto", inplace: bool = False,
                     dtype: torch.dtype = torch.float32) -> FastFSNet:
    """Return an eval-only copy of ``model`` for fast inference; ``model`` is left unchanged.

    ``backend``: ``"auto"`` (TorchScript + oneDNN on CPU float32, eager elsewhere), ``"jit"`` or
    ``"eager"``; see the module docstring. ``inplace=True`` converts ``model`` itself (no copy of
    the weights; ``model`` must not be used afterwards). ``dtype`` other than float32 (bf16) casts
    the folded weights once and runs eager in that precision, returning float32 logits.
    """
    net = (model if inplace else copy.deepcopy(model)).eval()
    for name in net.unused_at_prediction():
        delattr(net, name)
    fold_batchnorm(net)
    net.requires_grad_(False)
    net.to(dtype=dtype, memory_format=torch.channels_last)
    return FastFSNet(net, backend, dtype).eval()
