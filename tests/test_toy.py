"""Toy data set: deterministic, all three layouts, loadable by the FSNet loaders."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from utils.data.dataset import TestDataset, TrainDataset, read_mask
from utils.data.images import read_rgb
from utils.data.synthetic import QUICK, make_toy_dataset
from utils.toy import main


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "Toy", seed=0, quick=True)


def test_toy_is_deterministic_and_seeded(toy, tmp_path):
    again = make_toy_dataset(tmp_path / "again", seed=0, quick=True)
    assert _digest(toy) == _digest(again)
    other = _digest(make_toy_dataset(tmp_path / "other", seed=1, quick=True))
    assert other.keys() == _digest(toy).keys() and other != _digest(toy)


def test_toy_layouts_and_loaders(toy):
    for train_type in ("pretrain_rgb", "pretrain_flow", "finetune"):
        ds = TrainDataset(toy, train_type, trainsize=32)
        assert len(ds) > 0 and ds[0][0].shape == (3, 32, 32)
    video = TrainDataset(toy, "finetune")
    assert len(video) == QUICK.train_sequences * (QUICK.train_frames - 1)
    static = TrainDataset(toy, "pretrain_rgb")
    assert len(static) == QUICK.static_images + QUICK.train_sequences * QUICK.train_frames
    test = TestDataset(toy / "TestSet" / "Toy", testsize=32)
    assert len(test) == QUICK.test_sequences * (QUICK.test_frames - 1)
    assert len(test.unpredicted) == QUICK.test_sequences
    item = test[0]
    assert (item["height"], item["width"]) == (QUICK.height, QUICK.width) and QUICK.height != QUICK.width


def test_toy_content_is_learnable(toy):
    gts = sorted((toy / "TestSet" / "Toy").glob("*/GT/*.png")) + sorted((toy / "TrainSet_Video" / "ground-truth").glob("*.png"))
    for gt_path in gts:
        fraction = (read_mask(gt_path) > 0).mean()
        assert 0.05 < fraction < 0.5, gt_path
    frame = np.asarray(read_rgb(sorted((toy / "TestSet" / "Toy").glob("*/Frame/00000.jpg"))[0]), np.float32)
    mask = read_mask(sorted((toy / "TestSet" / "Toy").glob("*/GT/00000.png"))[0]) > 0
    saturation = frame.max(axis=2) - frame.min(axis=2)
    assert saturation[mask].mean() > 2 * saturation[~mask].mean()  # saturated objects, grey background
    flow = np.asarray(read_rgb(sorted((toy / "TestSet" / "Toy").glob("*/OF_FlowNet2/00000.jpg"))[0]))
    assert flow.std() > 5  # real flow, not a constant image


def test_toy_refuses_foreign_folder_and_regenerates_own(toy, tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="toy.json"):
        make_toy_dataset(tmp_path, quick=True)
    assert main(["--out", str(toy), "--quick"]) == 0
    assert (toy / "toy.json").is_file()
