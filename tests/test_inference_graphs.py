"""The CUDA-graph replay of the inference pipeline (utils.inference.cuda_graph): on the CPU through
a stand-in capture that re-runs the captured call on the static buffers (tests/cuda_graph_standin),
so the wrapper's logic runs through the real ``run_pipeline``; on CUDA (skipped without it) with a
real graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cuda_graph_standin import RerunCapture
from utils.cli import BadInputError
from utils.inference.cuda_graph import (FALLBACK_WARNING, GraphReplay, capture_predictor,
                                        resolve_cuda_graphs)
from utils.inference.pipeline import PredictOptions, batches_of, run_pipeline

SIZE = 32
BATCH = 3
FRAMES = 7  # batches of 3, 3 and 1 (padded to 3)
CUDA = torch.device("cuda")


def network(calls: list):
    """A stand-in for FSNet whose maps differ per frame; records the tensors it is called with."""
    def forward(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        calls.append((image, flow))
        return image.mean(1, keepdim=True) * (1 + flow[:, :1])
    return forward


def samples(count: int = FRAMES):
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        yield {"image": torch.randn(3, SIZE, SIZE, generator=generator),
               "flow": torch.rand(3, SIZE, SIZE, generator=generator), "sequence": "seq",
               "frame": f"{index:05d}", "frame_path": "", "height": 20, "width": 30}


def predict(predictor, out: Path, device: torch.device = torch.device("cpu")):
    options = PredictOptions(batchsize=BATCH, show_progress=False)
    return run_pipeline(predictor, batches_of(samples(), BATCH), out, device, options, FRAMES)


def maps(folder: Path) -> dict:
    def read(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image)
    return {path.name: read(path) for path in sorted(folder.rglob("*.png"))}


def example(device: torch.device = torch.device("cpu")) -> torch.Tensor:
    return torch.zeros(BATCH, 3, SIZE, SIZE, device=device)


def test_replay_writes_the_eager_maps_with_one_capture_and_static_inputs(tmp_path):
    eager_stats = predict(network([]), tmp_path / "eager")
    calls, capture = [], RerunCapture()
    replayed = capture_predictor(network(calls), example(), example(), None, capture=capture)
    assert isinstance(replayed, GraphReplay)
    stats = predict(replayed, tmp_path / "graph")
    assert stats.cuda_graphs and not eager_stats.cuda_graphs
    assert capture.captures == 1 and capture.replays == 3  # three batches, the last one padded
    assert len(calls) == 4 and all(image is replayed.image and flow is replayed.flow for image, flow in calls)
    expected, ours = maps(tmp_path / "eager"), maps(tmp_path / "graph")
    assert len(ours) == FRAMES and ours.keys() == expected.keys()
    for name, array in expected.items():
        np.testing.assert_array_equal(ours[name], array, err_msg=name)
    assert len({array.tobytes() for array in ours.values()}) == FRAMES  # every frame its own map


def test_a_failed_capture_runs_eagerly_after_one_warning_line(tmp_path, capsys):
    def failing(call):
        raise RuntimeError("operation not permitted when stream is capturing\nCUDA kernel errors ...")
    predictor = network([])
    assert capture_predictor(predictor, example(), example(), None, capture=failing) is predictor
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"{FALLBACK_WARNING} (operation not permitted when stream is capturing); the "
                     "network runs eagerly (--cuda_graphs off skips the attempt)"]
    assert not predict(predictor, tmp_path).cuda_graphs


def test_replay_refuses_another_shape():
    replayed = capture_predictor(network([]), example(), example(), None, capture=RerunCapture())
    with pytest.raises(ValueError, match=r"captured for inputs \(3, 3, 32, 32\)"):
        replayed(torch.zeros(2, 3, SIZE, SIZE), torch.zeros(2, 3, SIZE, SIZE))


def test_resolve_cuda_graphs():
    cpu = torch.device("cpu")
    assert [resolve_cuda_graphs("auto", CUDA, b) for b in ("plain", "eager", "jit")] == [True, True, False]
    assert not resolve_cuda_graphs("auto", cpu, "eager") and not resolve_cuda_graphs("off", CUDA, "eager")
    assert resolve_cuda_graphs("on", CUDA, "jit")
    with pytest.raises(BadInputError, match="--cuda_graphs on needs CUDA .* — .*--device cuda"):
        resolve_cuda_graphs("on", cpu, "eager")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_equals_eager_on_the_gpu(tmp_path):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 1, 3, padding=1).to(CUDA).eval()

    def forward(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return conv(torch.cat([image, flow], 1))
    predict(forward, tmp_path / "eager", CUDA)
    replayed = capture_predictor(forward, example(CUDA), example(CUDA), None)
    assert isinstance(replayed, GraphReplay)
    assert predict(replayed, tmp_path / "graph", CUDA).cuda_graphs
    expected, ours = maps(tmp_path / "eager"), maps(tmp_path / "graph")
    assert len(ours) == FRAMES
    for name, array in expected.items():
        np.testing.assert_array_equal(ours[name], array, err_msg=name)
