"""Loaders: pairing by stem, mismatch errors, mask modes, official transforms, flip, test set, import."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import transforms

from utils.data.dataset import IMAGENET_MEAN, IMAGENET_STD, TestDataset, TrainDataset, read_mask
from utils.data.davis_layout import import_davis
from utils.flow.color import flow_from_color, flow_to_color
from utils.data.images import check_images, image_header, read_mask_official
from utils.data.transforms import gt_tensor, input_tensor
from utils.data.verify import verify_samples

REPO = Path(__file__).resolve().parents[1]

H, W, S = 24, 32, 16


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _mask(seed: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[4:4 + seed % 10 + 5, 3:20] = 255
    return mask


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _video_set(root: Path, seqs=("a", "b"), frames=3, flow_last=False) -> Path:
    """TrainSet_Video with <seq>_<frame> names; flows for all but the last frame unless flow_last."""
    base = root / "TrainSet_Video"
    for s, seq in enumerate(seqs):
        for t in range(frames):
            name = f"{seq}_{t:05d}"
            _write(base / "Imgs" / f"{name}.jpg", _rgb(10 * s + t))
            _write(base / "ground-truth" / f"{name}.png", _mask(t))
            if t < frames - 1 or flow_last:
                _write(base / "Flow" / f"{name}.jpg", flow_to_color(np.full((H, W, 2), [1.0, t], np.float32)))
    return root


def _static_set(root: Path, names=("x1", "x2", "x10")) -> Path:
    for i, name in enumerate(names):
        _write(root / "TrainSet_StaticAndVideo" / "Imgs" / f"{name}.jpg", _rgb(i))
        _write(root / "TrainSet_StaticAndVideo" / "GTs" / f"{name}.png", _mask(i))
    return root


def _denormalise(tensor: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((tensor * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- pairing

def test_pairs_by_stem_in_natural_order(tmp_path):
    ds = TrainDataset(_static_set(tmp_path), "pretrain_rgb", trainsize=S)
    assert [p["image"].stem for p in ds.samples] == ["x1", "x2", "x10"]
    assert all(p["image"].stem == p["gt"].stem for p in ds.samples)
    image, flow, gt = ds[2]
    assert image.shape == flow.shape == (3, S, S) and gt.shape == (1, S, S)
    assert torch.equal(image, flow)  # pretrain_rgb: flow input := image


def test_missing_gt_is_an_error_naming_files(tmp_path):
    root = _static_set(tmp_path)
    (root / "TrainSet_StaticAndVideo" / "GTs" / "x2.png").unlink()
    with pytest.raises(ValueError) as error:
        TrainDataset(root, "pretrain_rgb")
    message = str(error.value)
    assert "x2.jpg" in message and "2 complete" in message and "1 unmatched" in message
    assert "--drop_unpaired" in message


def test_extra_gt_is_an_error_and_drop_unpaired_skips(tmp_path, capsys):
    root = _static_set(tmp_path)
    _write(root / "TrainSet_StaticAndVideo" / "GTs" / "orphan.png", _mask(0))
    with pytest.raises(ValueError, match="orphan.png"):
        TrainDataset(root, "pretrain_rgb")
    ds = TrainDataset(root, "pretrain_rgb", drop_unpaired=True)
    assert len(ds) == 3
    assert "skipped 1 unpaired" in capsys.readouterr().out


def test_duplicate_stem_is_an_error(tmp_path):
    root = _static_set(tmp_path)
    _write(root / "TrainSet_StaticAndVideo" / "Imgs" / "x1.png", _rgb(0))
    with pytest.raises(ValueError, match="share the stem 'x1'"):
        TrainDataset(root, "pretrain_rgb")


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="TrainSet_Video/Imgs"):
        TrainDataset(_static_set(tmp_path), "finetune")


def test_video_last_frame_rule_and_middle_gap(tmp_path, capsys):
    root = _video_set(tmp_path)
    for train_type in ("finetune", "pretrain_flow"):
        ds = TrainDataset(root, train_type, trainsize=S)
        assert len(ds) == 4 and sorted(ds.last_frames_without_flow) == ["a_00002", "b_00002"]
    assert "last frames have no forward flow" in capsys.readouterr().out
    (root / "TrainSet_Video" / "Flow" / "a_00001.jpg").unlink()
    with pytest.raises(ValueError, match="a_00001"):
        TrainDataset(root, "finetune")


def test_stages_feed_the_right_inputs(tmp_path):
    root = _video_set(tmp_path)
    image_f, flow_f, _ = TrainDataset(root, "finetune", trainsize=S)[0]
    image_p, flow_p, _ = TrainDataset(root, "pretrain_flow", trainsize=S)[0]
    assert torch.equal(flow_f, flow_p) and torch.equal(image_p, flow_p)  # pretrain_flow: image := flow
    assert not torch.equal(image_f, flow_f)


def test_max_samples_keeps_an_evenly_spaced_subset(tmp_path):
    ds = TrainDataset(_static_set(tmp_path, [f"s{i}" for i in range(10)]), "pretrain_rgb", max_samples=3)
    assert [p["image"].stem for p in ds.samples] == ["s0", "s4", "s9"]


def test_unreadable_file_is_an_error_naming_it(tmp_path):
    root = _static_set(tmp_path)
    bad = root / "TrainSet_StaticAndVideo" / "GTs" / "x2.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="x2.png"):
        TrainDataset(root, "pretrain_rgb")[1]


def test_size_mismatch_is_an_error(tmp_path):
    root = _static_set(tmp_path)
    _write(root / "TrainSet_StaticAndVideo" / "GTs" / "x1.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(ValueError, match="differ in size"):
        TrainDataset(root, "pretrain_rgb")[0]


# ---------------------------------------------------------------- masks

@pytest.mark.parametrize("kind", ["L", "1", "P", "RGBA", "I16", "RGB", "JPEG"])
def test_mask_modes(tmp_path, kind):
    want = np.zeros((H, W), bool)
    want[5:15, 8:25] = True
    path = tmp_path / ("m.jpg" if kind == "JPEG" else "m.png")
    if kind == "L":
        image = Image.fromarray(np.where(want, 200, 100).astype(np.uint8))  # 100 <= 127: background
    elif kind == "1":
        image = Image.fromarray(want)
    elif kind == "P":  # index 0 has a white palette colour, index 1 dark red (DAVIS-like): index rules
        image = Image.fromarray(want.astype(np.uint8), mode="P")
        image.putpalette([255, 255, 255, 128, 0, 0] + [0] * 762)
    elif kind == "RGBA":  # white everywhere, foreground opaque, background transparent
        rgba = np.full((H, W, 4), 255, np.uint8)
        rgba[..., 3] = np.where(want, 255, 0)
        image = Image.fromarray(rgba)
    elif kind == "I16":
        image = Image.fromarray(np.where(want, 40000, 30000).astype(np.uint16))
    elif kind == "RGB":
        image = Image.fromarray(np.stack([np.where(want, 255, 0).astype(np.uint8)] * 3, -1))
    else:
        image = Image.fromarray(np.where(want, 255, 0).astype(np.uint8))
    image.save(path)
    if kind == "I16":
        assert Image.open(path).mode.startswith("I")
    mask = read_mask(path)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask > 0, want)


def test_official_gt_mode_keeps_soft_values(tmp_path):
    root = _static_set(tmp_path, ["s0"])
    gt_path = root / "TrainSet_StaticAndVideo" / "GTs" / "s0.png"
    _write(gt_path, np.full((H, W), 100, np.uint8))
    assert float(TrainDataset(root, "pretrain_rgb", trainsize=S)[0][2].max()) == 0.0
    soft = TrainDataset(root, "pretrain_rgb", trainsize=S, gt_mode="official")[0][2]
    assert torch.allclose(soft, torch.full_like(soft, 100 / 255))
    assert np.asarray(read_mask_official(gt_path)).max() == 100


# ---------------------------------------------------------------- transforms

def test_transforms_match_official_torchvision_pipeline(tmp_path):
    root = _video_set(tmp_path)
    ds = TrainDataset(root, "finetune", trainsize=S)
    image, flow, gt = ds[1]
    paths = ds.samples[1]
    official = transforms.Compose([transforms.Resize((S, S)), transforms.ToTensor(),
                                   transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    official_gt = transforms.Compose([transforms.Resize((S, S)), transforms.ToTensor()])
    assert torch.equal(image, official(Image.open(paths["image"]).convert("RGB")))
    assert torch.equal(flow, official(Image.open(paths["flow"]).convert("RGB")))
    assert torch.equal(gt, official_gt(Image.open(paths["gt"]).convert("L")))
    assert 0 < float(gt[(gt > 0) & (gt < 1)].numel())  # bilinear resize leaves soft edges


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 24), st.integers(0, 2**32 - 1))
def test_transforms_are_torchvisions_bit_for_bit(width, height, size, seed):
    """The written-out ToTensor / Normalize equal torchvision's on every image and size."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rgb, grey = Image.fromarray(pixels), Image.fromarray(pixels[..., 0])
    official = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                   transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    official_gt = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])
    assert torch.equal(input_tensor(rgb, size), official(rgb))
    assert torch.equal(gt_tensor(grey, size), official_gt(grey))


def test_a_run_does_not_import_torchvision():
    """Loading and transforming frames leaves torchvision (about a second to import) unloaded."""
    code = ("import sys; from utils.data.dataset import TestDataset; "
            "from utils.inference.video import video_samples; "
            "from utils.data.transforms import input_tensor; from PIL import Image; "
            "input_tensor(Image.new('RGB', (8, 8)), 4); print('torchvision' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_hflip_mirrors_images_and_flow_direction(tmp_path, monkeypatch):
    root = _video_set(tmp_path)
    plain = TrainDataset(root, "finetune", trainsize=S)[0]
    monkeypatch.setattr(random, "random", lambda: 0.0)  # always flip
    flipped = TrainDataset(root, "finetune", trainsize=S, hflip=True)[0]
    assert torch.allclose(flipped[0], plain[0].flip(-1), atol=1e-5)
    assert torch.allclose(flipped[2], plain[2].flip(-1), atol=1e-5)
    before = flow_from_color(_denormalise(plain[1])).reshape(-1, 2).mean(0)
    after = flow_from_color(_denormalise(flipped[1])).reshape(-1, 2).mean(0)
    assert before[0] > 0.5 and after[0] < -0.5  # sample 0 has flow (1, 0): u changes sign
    assert abs(after[1] - before[1]) < 0.1


# ---------------------------------------------------------------- test set

def _test_seq(root: Path, seq: str, frames: int = 3, flows=None) -> Path:
    for t in range(frames):
        _write(root / seq / "Frame" / f"{t:05d}.jpg", _rgb(t))
    for t in (range(frames - 1) if flows is None else flows):
        _write(root / seq / "OF_FlowNet2" / f"{t:05d}.jpg", _rgb(100 + t))
    return root


def test_test_dataset_items_order_and_last_frame(tmp_path):
    for seq in ("b", "a10", "a2"):
        _test_seq(tmp_path, seq)
    ds = TestDataset(tmp_path, testsize=S)
    assert ds.sequences == ["a2", "a10", "b"]
    assert len(ds) == 6 and [u[:2] for u in ds.unpredicted] == [("a2", "00002"), ("a10", "00002"), ("b", "00002")]
    item = ds[0]
    assert item["image"].shape == item["flow"].shape == (3, S, S)
    assert (item["sequence"], item["frame"], item["height"], item["width"]) == ("a2", "00000", H, W)
    assert item["frame_path"].endswith("a2/Frame/00000.jpg")
    assert len(TestDataset(tmp_path / "b", testsize=S)) == 2  # a single sequence folder works too


def test_test_dataset_rejects_missing_and_orphan_flows(tmp_path):
    _test_seq(tmp_path, "s", frames=4, flows=[0, 2])
    with pytest.raises(ValueError, match=r"00001\.jpg.*python -m utils\.flow"):
        TestDataset(tmp_path)
    _write(tmp_path / "s" / "OF_FlowNet2" / "00001.jpg", _rgb(0))
    _write(tmp_path / "s" / "OF_FlowNet2" / "00009.jpg", _rgb(0))
    with pytest.raises(ValueError, match="00009.jpg"):
        TestDataset(tmp_path)


def test_test_dataset_missing_flow_folder_and_frame_folder(tmp_path):
    _test_seq(tmp_path, "s", flows=[])
    with pytest.raises(FileNotFoundError, match="OF_FlowNet2"):
        TestDataset(tmp_path)
    (tmp_path / "junk").mkdir()
    with pytest.raises(FileNotFoundError, match="junk"):
        TestDataset(tmp_path, flow_folder="Other")


# ---------------------------------------------------------------- DAVIS import

def test_davis_import_builds_layouts_with_flow(tmp_path):
    davis = tmp_path / "DAVIS"
    for seq in ("bear", "car-shadow"):
        for t in range(3):
            _write(davis / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", _rgb(t))
            _write(davis / "Annotations" / "480p" / seq / f"{t:05d}.png", _mask(t))
    sets = davis / "ImageSets" / "480p"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("".join(f"/JPEGImages/480p/bear/{t:05d}.jpg /Annotations/480p/bear/{t:05d}.png\n"
                                            for t in range(3)))
    (sets / "val.txt").write_text("car-shadow\n")
    root = tmp_path / "dataset"
    summary = import_davis(davis, root, progress=False)
    assert summary["train"]["frames"] == 3 and summary["val"]["frames"] == 3
    assert (root / "TrainSet_Video" / "Imgs" / "bear_00000.jpg").is_symlink()
    assert sorted(p.name for p in (root / "TrainSet_Video" / "Flow").glob("*.jpg")) == ["bear_00000.jpg", "bear_00001.jpg"]
    assert len(TrainDataset(root, "finetune", trainsize=S)) == 2
    assert len(TrainDataset(root, "pretrain_rgb", trainsize=S)) == 3
    test = TestDataset(root / "TestSet" / "DAVIS", testsize=S)
    assert len(test) == 2 and test.unpredicted[0][:2] == ("car-shadow", "00002")
    assert import_davis(davis, root, progress=False)["val"]["flow"]["written"] == 0  # re-run is safe
    (root / "TestSet" / "DAVIS" / "car-shadow" / "GT" / "00000.png").unlink()
    _write(root / "TestSet" / "DAVIS" / "car-shadow" / "GT" / "00000.png", _mask(5))
    with pytest.raises(FileExistsError, match="00000.png"):
        import_davis(davis, root, flow=False, progress=False)


# ---------------------------------------------------------------- header check before work

def test_header_check_finds_truncated_files_and_size_mismatches(tmp_path):
    jpeg = _write(tmp_path / "a.jpg", _rgb(0))
    png = _write(tmp_path / "a.png", _mask(0))
    other = _write(tmp_path / "b.png", np.zeros((H + 1, W), np.uint8))
    assert image_header(jpeg)[:2] == image_header(png)[:2] == (W, H) and image_header(png).mode == "L"
    headers, problems = check_images([jpeg, png, other], [[jpeg, png], [png, other]])
    assert set(headers) == {jpeg, png, other} and len(problems) == 1 and "b.png" in problems[0]
    for path, cut in ((jpeg, 20), (png, 40)):  # the header still opens; end marker and pixels gone
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - cut])
    (tmp_path / "empty.png").write_bytes(b"")
    headers, problems = check_images([jpeg, png, tmp_path / "empty.png", other])
    assert list(headers) == [other] and len(problems) == 3
    assert all("Cannot read image" in p for p in problems) and any("truncated JPEG" in p for p in problems)
# ---------------------------------------------------------------- input verification

def test_verify_passes_good_samples_and_returns_sizes(tmp_path):
    root = _video_set(tmp_path)
    samples = TrainDataset(root, "finetune", trainsize=S).samples
    sizes = verify_samples(samples, workers=2)
    assert len(sizes) == 12 and set(sizes.values()) == {(W, H)}


def test_verify_reports_every_problem_in_one_error(tmp_path):
    root = _static_set(tmp_path, [f"s{i}" for i in range(6)])
    imgs, gts = root / "TrainSet_StaticAndVideo" / "Imgs", root / "TrainSet_StaticAndVideo" / "GTs"
    (imgs / "s0.jpg").write_bytes(b"")
    jpeg = (imgs / "s1.jpg").read_bytes()
    (imgs / "s1.jpg").write_bytes(jpeg[:len(jpeg) // 2])  # header fine, data cut
    png = (gts / "s2.png").read_bytes()
    (gts / "s2.png").write_bytes(png[:len(png) // 2])  # pixel data cut
    (gts / "s3.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _write(gts / "s4.png", np.zeros((H + 2, W), np.uint8))
    samples = TrainDataset(root, "pretrain_rgb").samples
    with pytest.raises(ValueError) as error:
        verify_samples(samples, workers=3)
    message = str(error.value)
    assert message.startswith("5 problem(s) in the input files (12 files of 6 samples checked)")
    for name in ("s0.jpg: empty file", "s1.jpg: ", "s2.png: ",
                 "s3.png: ", f"s4.png: {W}x{H + 2}"):
        assert name in message, name
    assert "s5" not in message


def test_verify_decides_by_full_decode_without_the_end_marker(tmp_path):
    path = _write(tmp_path / "a.jpg", _rgb(0))
    path.write_bytes(path.read_bytes() + b"\0" * 200)  # EOI no longer in the tail: full decode
    assert image_header(path)[:2] == (W, H)
    png = _write(tmp_path / "m.png", _mask(0)).read_bytes()
    (tmp_path / "m.png").write_bytes(png[:-12])  # only IEND lost: every pixel still decodes
    assert image_header(tmp_path / "m.png")[:2] == (W, H)
