"""ONNX export of FSNet's inference network, and an ONNX Runtime predictor.

The command line is ``python -m utils.export`` (``python -m lib.export`` runs it too). It writes
the network that inference runs: appearance prediction ``pred_s`` only, BatchNorm folded
(:func:`lib.fast.build_fast_model`), inputs ``image`` and ``flow`` ``(N, 3, S, S)``, output
``logits`` ``(N, 1, S, S)`` (upsampled to the input size, as ``FSNet.forward``). The batch axis is
always dynamic; ``--dynamic`` also makes height and width dynamic (any multiple of 32). The file is
then checked against the PyTorch forward (``FSNet.forward``'s ``pred_s``) on random inputs:
``max |onnx - torch| <= ATOL + RTOL * max |torch|`` (absolute plus relative, so that the nearly
flat logits of an early checkpoint pass while a wrong network fails).

ONNX has no adaptive average pooling with bins that do not divide the input (the PPM pools an
11x11 map into 2, 3 and 6 bins), so it is exported as two matrix products with the exact
PyTorch bin boundaries (``floor(i n / b)`` to ``ceil((i + 1) n / b)``), built in the graph from the
input's shape. The command line reads checkpoints with :func:`lib.checkpoint.build_fsnet`, which
rebuilds whatever FSNet variant the file holds.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from lib.fast import build_fast_model
from lib.fsnet import FSNet

if TYPE_CHECKING:
    import onnx

PathLike = Union[str, Path]
OPSET = 17
#: The check's tolerance: ``max |onnx - torch| <= ATOL + RTOL * max |torch|`` (logit units). 1e-4
#: moves a probability by at most 2.5e-5, far below one grey level of a map (1/255).
ATOL = 1e-4
RTOL = 1e-4
MODEL_FILE, WEIGHTS_FILE = "fsnet.onnx", "fsnet.weights"  # names inside save_external's folder
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


def save_external(proto: "onnx.ModelProto", folder: PathLike) -> Path:
    """Write ``proto`` as ``folder/fsnet.onnx`` (the graph) + ``folder/fsnet.weights`` (external
    data, written tensor by tensor, never serialized all at once); return the graph's path."""
    import onnx
    path = Path(folder) / MODEL_FILE
    onnx.save_model(proto, str(path), save_as_external_data=True, location=WEIGHTS_FILE)
    return path


def onnx_predictor(model: FSNet, testsize: int = 352) -> "OnnxPredictor":
    """Export ``model`` into ONNX Runtime through a temporary folder (:func:`save_external`);
    ``model`` is consumed. The peak memory stays below that of loading the checkpoint."""
    proto = export_model(model, testsize, inplace=True)
    with tempfile.TemporaryDirectory(prefix="fsnet-onnx-") as folder:
        path = save_external(proto, folder)
        del proto  # ONNX Runtime loads its own copy of the weights
        return OnnxPredictor(path)


# ----------------------------------------------------------------------------- ONNX Runtime


def require_onnxruntime():
    """Import ``onnxruntime`` (and check that ``onnx``, which the exporter needs, is importable) or
    raise ``ImportError`` with the install command; return the ``onnxruntime`` module."""
    try:
        import onnxruntime
        if importlib.util.find_spec("onnx") is None:  # torch.onnx.export serialises with it;
            raise ImportError("onnx", name="onnx")   # found, not imported: that takes ~0.5 s
    except (ImportError, ValueError) as error:  # ValueError: a module set to None in sys.modules
        raise ImportError(f"the onnx backend needs the optional packages onnx and onnxruntime "
                          f"({getattr(error, 'name', None) or 'one of them'} is not installed) — "
                          f"{ONNXRUNTIME_INSTALL}, or use another --backend") from error
    return onnxruntime


class OnnxLoadError(RuntimeError):
    """ONNX Runtime could not load a model (a damaged or incomplete file)."""


class OnnxPredictor:
    """``(image, flow) -> pred_s`` logits with ONNX Runtime on the CPU (float32 tensors in/out)."""

    def __init__(self, onnx_model: Union[bytes, PathLike], threads: Optional[int] = None,
                 optimized: bool = False, save_optimized: Optional[PathLike] = None) -> None:
        """``optimized``: the model is one ONNX Runtime optimized already (``save_optimized`` of
        an earlier session), loaded without optimizing it again. ``save_optimized``: write the
        optimized model there (weights beside it as ``<name>.weights``); it suits this machine
        only (its CPU's blocked layouts)."""
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # No busy-waiting between calls: the loader and writer threads share the cores, and on a
        # shared 2-core machine spinning threads measured 1.5x slower (docs/benchmarks.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if optimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if save_optimized is not None:
            # errors only: ONNX Runtime warns that an optimized model suits this machine alone,
            # which the export cache's key (it holds the CPU kind) already accounts for
            options.log_severity_level = 3
            options.optimized_model_filepath = str(save_optimized)
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name",
                f"{Path(save_optimized).stem}.weights")
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's exception types derive from Exception only
            raise OnnxLoadError(f"ONNX Runtime cannot load "
                                f"{'the model' if isinstance(source, bytes) else source}: {error}") from error

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
    max_abs_logit: float

    @property
    def tolerance(self) -> float:
        """The largest accepted deviation: ``ATOL + RTOL * max |torch logit|``."""
        return ATOL + RTOL * self.max_abs_logit

    @property
    def passed(self) -> bool:
        """Whether the deviation is within :attr:`tolerance`."""
        return self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        verdict = "OK" if self.passed else "FAILED"
        return (f"check {verdict}: input {'x'.join(map(str, self.shape))}, max |onnx - torch| "
                f"{self.max_abs_diff:.2e} (tolerance {self.tolerance:.2e} = {ATOL:.0e} + {RTOL:.0e} "
                f"x max |logit| {self.max_abs_logit:.3g}; logit range {self.logit_range:.3g})")


def check_export(model: FSNet, predictor: OnnxPredictor, shape: Sequence[int],
                 seed: int = 0) -> ExportCheck:
    """Compare ``predictor`` with the plain ``FSNet.forward`` (``pred_s``) on random inputs."""
    gen = torch.Generator().manual_seed(seed)
    image, flow = (torch.randn(*shape, generator=gen) for _ in range(2))
    with torch.no_grad():
        reference = model.eval()(image, flow)[0]
    deviation = (predictor(image, flow) - reference).abs().max().item()
    return ExportCheck(tuple(shape), deviation, (reference.max() - reference.min()).item(),
                       reference.abs().max().item())


if __name__ == "__main__":  # the command line lives in utils.export (lib/ imports no utils/)
    import runpy
    runpy.run_module("utils.export", run_name="__main__", alter_sys=True)
