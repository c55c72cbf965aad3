"""ONNX export of FSNet's inference network, and an ONNX Runtime predictor.

    python -m lib.export --model_path CKPT --out fsnet.onnx [--testsize 352] [--dynamic]

writes the network that inference runs: appearance prediction ``pred_s`` only, BatchNorm folded
(:func:`lib.fast.build_fast_model`), inputs ``image`` and ``flow`` ``(N, 3, S, S)``, output
``logits`` ``(N, 1, S, S)`` (upsampled to the input size, as ``FSNet.forward``). The batch axis is
always dynamic; ``--dynamic`` also makes height and width dynamic (any multiple of 32). The file is
then checked against the PyTorch forward (``FSNet.forward``'s ``pred_s``) on random inputs: the
largest absolute difference must stay within ``1e-4`` of the logit range; the check is printed.

ONNX has no adaptive average pooling with bins that do not divide the input (the PPM pools an
11x11 map into 2, 3 and 6 bins), so it is exported as two matrix products with the exact
PyTorch bin boundaries (``floor(i n / b)`` to ``ceil((i + 1) n / b)``), built in the graph from the
input's shape. Checkpoints are read with :func:`lib.checkpoint.build_fsnet`, which rebuilds
whatever FSNet variant the file holds (``lib/`` imports nothing from ``utils/``).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from lib.checkpoint import build_fsnet
from lib.fast import build_fast_model
from lib.fsnet import FSNet

if TYPE_CHECKING:
    import onnx

PathLike = Union[str, Path]
OPSET = 17
#: Largest accepted ``max |onnx - torch|`` as a fraction of the PyTorch logit range.
TOLERANCE = 1e-4
ONNXRUNTIME_INSTALL = "pip install onnx onnxruntime (or pip install -r requirements-extra.txt)"


# ----------------------------------------------------------------------------- export


class AppearanceNet(nn.Module):
    """``(image, flow) -> pred_s`` logits of a BN-folded FSNet, as one traceable module."""

    def __init__(self, model: FSNet, inplace: bool = False) -> None:
        super().__init__()
        self.net = build_fast_model(model, backend="eager", inplace=inplace).net

    def forward(self, image: Tensor, flow: Tensor) -> Tensor:
        return self.net.predict_appearance(image, flow)


def _pool_matrix(g, x, axis: int, bins: int):
    """ONNX graph of the ``(bins, n)`` averaging matrix of adaptive pooling along ``axis``."""
    def const(value):
        return g.op("Constant", value_t=torch.tensor(value, dtype=torch.int64))
    n = g.op("Gather", g.op("Shape", x), const(axis))
    index = const([[i] for i in range(bins)])
    start = g.op("Div", g.op("Mul", index, n), const(bins))  # floor(i n / b)
    end = g.op("Div", g.op("Add", g.op("Mul", g.op("Add", index, const(1)), n), const(bins - 1)),
               const(bins))  # ceil((i + 1) n / b)
    position = g.op("Range", const(0), n, const(1))
    inside = g.op("And", g.op("Not", g.op("Less", position, start)), g.op("Less", position, end))
    count = g.op("Cast", g.op("Sub", end, start), to_i=1)  # 1 = FLOAT
    return g.op("Div", g.op("Cast", inside, to_i=1), count)


def _adaptive_avg_pool2d(g, x, output_size):
    from torch.onnx import symbolic_helper
    bins = symbolic_helper._parse_arg(output_size, "is")
    if list(bins) == [1, 1]:
        return g.op("GlobalAveragePool", x)
    rows = g.op("MatMul", _pool_matrix(g, x, 2, bins[0]), x)
    return g.op("MatMul", rows, g.op("Transpose", _pool_matrix(g, x, 3, bins[1]), perm_i=[1, 0]))


@contextlib.contextmanager
def _exportable_pooling() -> Iterator[None]:
    torch.onnx.register_custom_op_symbolic("aten::adaptive_avg_pool2d", _adaptive_avg_pool2d, OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::adaptive_avg_pool2d", OPSET)


def export_model(model: FSNet, testsize: int = 352, dynamic: bool = False,
                 inplace: bool = False) -> "onnx.ModelProto":
    """The ONNX model of :class:`AppearanceNet` (weights included) as an ``onnx.ModelProto``.

    The batch axis is dynamic; ``dynamic`` makes height and width dynamic too. ``inplace`` folds
    ``model`` itself instead of a copy and consumes it (do not use ``model`` after). The graph is
    traced without its weights, which are then moved one by one from the folded network into the
    model's initializers: the TorchScript exporter's own weight export holds about three copies
    of them at once (+860 MB for ResNet-50), this holds one.
    """
    require_onnxruntime()
    import onnx
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    example = torch.zeros(1, 3, testsize, testsize)
    network = AppearanceNet(model, inplace).eval()
    graph = io.BytesIO()
    with warnings.catch_warnings(), _exportable_pooling(), torch.no_grad():
        # Shape checks in Python become constants of the trace, and torch flags the TorchScript
        # exporter as deprecated: both warnings are expected here.
        warnings.simplefilter("ignore")
        # Constant folding is left to ONNX Runtime (BN is folded already).
        torch.onnx.export(network, (example, example), graph, dynamo=False, opset_version=OPSET,
                          export_params=False, do_constant_folding=False,
                          input_names=["image", "flow"], output_names=["logits"],
                          dynamic_axes={"image": axes, "flow": axes, "logits": axes})
    proto = onnx.load_from_string(graph.getvalue())
    _move_weights(network, proto)
    return proto


def _move_weights(network: nn.Module, proto: "onnx.ModelProto") -> None:
    """Turn the graph inputs named after ``network``'s weights into initializers holding them,
    releasing each PyTorch tensor once copied (``network`` is unusable afterwards)."""
    from onnx import numpy_helper
    tensors = network.state_dict(keep_vars=True)
    inputs = proto.graph.input
    for value in inputs:
        if value.name in tensors:
            tensor = tensors[value.name]
            proto.graph.initializer.append(
                numpy_helper.from_array(tensor.detach().numpy(), value.name))
            tensor.data = torch.empty(0)
    kept = [value for value in inputs if value.name not in tensors]
    del inputs[:]
    inputs.extend(kept)


def export_bytes(model: FSNet, testsize: int = 352, dynamic: bool = False) -> bytes:
    """The serialized ONNX model of :func:`export_model` (``model`` is left unchanged)."""
    return export_model(model, testsize, dynamic).SerializeToString()


def onnx_predictor(model: FSNet, testsize: int = 352) -> "OnnxPredictor":
    """Export ``model`` into ONNX Runtime through a temporary file whose weights are written as
    external data (never serialized all at once); ``model`` is consumed. The peak memory stays
    below that of loading the checkpoint."""
    import onnx
    proto = export_model(model, testsize, inplace=True)
    with tempfile.TemporaryDirectory(prefix="fsnet-onnx-") as folder:
        path = Path(folder) / "fsnet.onnx"
        onnx.save_model(proto, str(path), save_as_external_data=True, location="fsnet.weights")
        del proto  # ONNX Runtime loads its own copy of the weights
        return OnnxPredictor(path)


# ----------------------------------------------------------------------------- ONNX Runtime


def require_onnxruntime():
    """Import ``onnxruntime`` (and check that ``onnx``, which the exporter needs, is importable) or
    raise ``ImportError`` with the install command; return the ``onnxruntime`` module."""
    try:
        import onnxruntime
        importlib.import_module("onnx")  # torch.onnx.export serialises with it
    except ImportError as error:
        raise ImportError(f"the onnx backend needs the optional packages onnx and onnxruntime "
                          f"({error.name or 'one of them'} is not installed) — "
                          f"{ONNXRUNTIME_INSTALL}, or use another --backend") from error
    return onnxruntime


class OnnxPredictor:
    """``(image, flow) -> pred_s`` logits with ONNX Runtime on the CPU (float32 tensors in/out)."""

    def __init__(self, onnx_model: Union[bytes, PathLike], threads: Optional[int] = None) -> None:
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # No busy-waiting between calls: the loader and writer threads share the cores, and on a
        # shared 2-core machine spinning threads measured 1.5x slower (docs/benchmarks.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    def __call__(self, image: Tensor, flow: Tensor) -> Tensor:
        feeds = {"image": _numpy(image), "flow": _numpy(flow)}
        return torch.from_numpy(self.session.run(["logits"], feeds)[0])


def _numpy(tensor: Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


# ----------------------------------------------------------------------------- check


@dataclass
class ExportCheck:
    """Result of :func:`check_export`: the largest deviation and what it is compared with."""

    shape: tuple
    max_abs_diff: float
    logit_range: float

    @property
    def relative(self) -> float:
        """``max_abs_diff`` as a fraction of the PyTorch logit range."""
        return self.max_abs_diff / max(self.logit_range, 1e-12)

    @property
    def passed(self) -> bool:
        """Whether the deviation is within :data:`TOLERANCE` of the logit range."""
        return self.relative <= TOLERANCE

    def __str__(self) -> str:
        verdict = "OK" if self.passed else "FAILED"
        return (f"check {verdict}: input {'x'.join(map(str, self.shape))}, max |onnx - torch| "
                f"{self.max_abs_diff:.2e} = {self.relative:.1e} of the logit range "
                f"{self.logit_range:.3g} (tolerance {TOLERANCE:.0e})")


def check_export(model: FSNet, predictor: OnnxPredictor, shape: Sequence[int],
                 seed: int = 0) -> ExportCheck:
    """Compare ``predictor`` with the plain ``FSNet.forward`` (``pred_s``) on random inputs."""
    gen = torch.Generator().manual_seed(seed)
    image, flow = (torch.randn(*shape, generator=gen) for _ in range(2))
    with torch.no_grad():
        reference = model.eval()(image, flow)[0]
    deviation = (predictor(image, flow) - reference).abs().max().item()
    return ExportCheck(tuple(shape), deviation, (reference.max() - reference.min()).item())


# ----------------------------------------------------------------------------- command line


def get_args_parser() -> argparse.ArgumentParser:
    """Options of ``python -m lib.export``."""
    parser = argparse.ArgumentParser(
        prog="python -m lib.export", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_path", required=True, help="FSNet checkpoint (.pth)")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--testsize", type=int, default=352,
                        help="input size of the export and of the check (multiple of 32)")
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic height and width too (the batch axis is always dynamic)")
    return parser


def export(model_path: PathLike, out: PathLike, testsize: int = 352,
           dynamic: bool = False) -> ExportCheck:
    """Export the checkpoint to ``out`` (atomically), check it, and return the check.

    Raises ``ValueError`` when the check fails (the file is then not written).
    """
    if testsize < 32 or testsize % 32:
        raise ValueError(f"--testsize {testsize} is not a positive multiple of 32 — use e.g. 352")
    out = Path(out)
    if out.resolve() == Path(model_path).resolve():
        raise ValueError(f"--out {out} is the checkpoint itself — choose another file name")
    require_onnxruntime()  # before the checkpoint is read
    model = build_fsnet(model_path)  # whatever variant the file holds
    data = export_bytes(model, testsize, dynamic)
    check = check_export(model, OnnxPredictor(data), (2, 3, testsize, testsize))
    if not check.passed:
        raise ValueError(f"the exported network deviates from PyTorch: {check} — please report "
                         f"this with your torch and onnxruntime versions")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(out)
    return check


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Export, check and print; a user error is one ``error:`` line and exit status 2."""
    args = get_args_parser().parse_args(argv)
    try:
        check = export(args.model_path, args.out, args.testsize, args.dynamic)
    except (ImportError, OSError, ValueError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.0f} MiB); {check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
