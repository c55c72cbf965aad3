"""FSNet variants (the paper's ablations): configuration checks, the parameters each variant has,
what its outputs depend on, gradients, the fast path and ONNX export, checkpoints, train.py flags.

Structural checks build networks on the meta device (no memory, no init); numerical ones use
ResNet-50 with an 8-channel head at 64x64, built once per variant.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

import train
from lib.checkpoint import (Checkpoint, build_fsnet, checkpoint_dict, config_from_dict,
                            init_from_state)
from lib.fast import build_fast_model
from lib.fsnet import FSNet, FSNetConfig
from tests.random_weights import randomize_weights
from utils.torch_files import save_checkpoint
from utils.inference.predict import load_predictor
from utils.training.finetune_init import init_finetune

SIZE = 64
SMALL = FSNetConfig(backbone="resnet50", channel=8)
#: Every value of every field appears in one of these (the numerical tests run these six).
VARIANTS = {
    "released": {},
    "vanilla": dict(rcam="concat", num_bpm=0),
    "app2mo_to_motion": dict(rcam="app2mo", bpm="to_motion"),
    "mo2app_to_appearance": dict(rcam="mo2app", bpm="to_appearance", num_bpm=2),
    "appearance": dict(streams="appearance"),
    "motion": dict(streams="motion"),
}
#: Parameters of one BPM at channel 32 (the release's ``bpm1``); Table 4 prints 0.507 M per 2.
BPM_PARAMS = 253_696


def meta_net(**fields) -> FSNet:
    """The ResNet-50 variant with ``fields`` on the meta device (built once per configuration)."""
    return _meta_net(tuple(sorted(fields.items())))


@functools.lru_cache(maxsize=None)
def _meta_net(fields: tuple) -> FSNet:
    with torch.device("meta"):
        return FSNet(FSNetConfig(backbone="resnet50", **dict(fields)))


@functools.lru_cache(maxsize=None)
def _small_net(name: str) -> FSNet:
    torch.manual_seed(0)
    return randomize_weights(FSNet(replace(SMALL, **VARIANTS[name]))).eval()


def small_net(name: str) -> FSNet:
    """A fresh copy of the variant ``name`` at channel 8 with random weights and BN statistics."""
    return copy.deepcopy(_small_net(name))


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, SIZE, SIZE, generator=gen) for _ in range(2))


def top_level(model: FSNet) -> set[str]:
    return {key.split(".")[0] for key in model.state_dict()}


# ----------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("fields, fragment", [
    (dict(rcam="full"), "duplex, app2mo, mo2app, concat"),
    (dict(bpm="both"), "duplex, to_motion, to_appearance"),
    (dict(streams="rgb"), "both, appearance, motion"),
    (dict(backbone="vgg16"), "res2net50, resnet50"),
    (dict(num_bpm=-1), "integer >= 0"),
    (dict(num_bpm=2.0), "integer >= 0"),
    (dict(channel=30), "multiple of 4"),
    (dict(streams="appearance", num_bpm=2), "num_bpm=2 does not apply"),
    (dict(streams="motion", rcam="concat"), "rcam='concat' does not apply"),
    (dict(streams="motion", bpm="to_motion"), "bpm='to_motion' does not apply"),
    (dict(num_bpm=0, bpm="to_appearance"), "has no BPMs"),
])
def test_invalid_configurations_name_the_valid_choices(fields, fragment):
    with pytest.raises(ValueError, match=fragment):
        FSNetConfig(**fields)


def test_construction_forms_and_unknown_fields():
    assert FSNetConfig(streams="appearance").streams == "appearance"  # valid on its own
    assert meta_net().config == FSNetConfig(backbone="resnet50")
    with torch.device("meta"):
        assert FSNet("resnet50", num_bpm=2).config == FSNetConfig(backbone="resnet50", num_bpm=2)
        assert FSNet(SMALL, num_bpm=0).config == replace(SMALL, num_bpm=0)
        with pytest.raises(ValueError, match="unknown FSNetConfig field.*'bpms'"):
            FSNet(bpms=2)


# ----------------------------------------------------------------------------- structure

#: The structural checks add single-field changes to the variants above.
STRUCTURES = {**VARIANTS, "n2": dict(num_bpm=2), "app2mo": dict(rcam="app2mo"),
              "to_motion": dict(bpm="to_motion"), "concat": dict(rcam="concat")}


def test_every_shared_key_keeps_the_released_name_and_shape():
    released = meta_net().state_dict()
    for name, fields in STRUCTURES.items():
        state = meta_net(**fields).state_dict()
        own = {k for k in state if k not in released}
        assert all(k.startswith("fuse_") for k in own), (name, sorted(own)[:3])
        assert all(state[k].shape == released[k].shape for k in state if k in released), name


def test_released_configuration_alone_keeps_the_never_run_modules():
    assert {"RGBF_conv3"} <= top_level(meta_net())
    assert "resnet.conv1.weight" in meta_net().state_dict()
    for name, fields in STRUCTURES.items():
        if fields:
            state = meta_net(**fields).state_dict()
            assert "RGBF_conv3.conv_bn.0.weight" not in state, name
            assert "resnet.conv1.weight" not in state and "resnet.bn1.weight" not in state, name


@pytest.mark.parametrize("rcam, rgb, flow, fuse", [
    ("duplex", True, True, False), ("app2mo", True, False, False),
    ("mo2app", False, True, False), ("concat", False, False, True)])
def test_fusion_modules_per_rcam(rcam, rgb, flow, fuse):
    modules = top_level(meta_net(rcam=rcam))
    for level in range(5):
        assert (f"atten_rgb_{level}" in modules) == rgb
        assert (f"atten_flow_{level}" in modules) == flow
        assert (f"fuse_{level}" in modules) == fuse
    if fuse:  # channel concatenation and one 1x1 convolution (with bias) per level
        state = meta_net(rcam=rcam).state_dict()
        assert state["fuse_4.weight"].shape == (2048, 4096, 1, 1)
        assert sorted(k for k in state if k.startswith("fuse_0")) == ["fuse_0.bias", "fuse_0.weight"]


@pytest.mark.parametrize("num_bpm", [0, 1, 2, 4, 6, 8])
def test_num_bpm_modules_and_table4_parameters(num_bpm):
    model = meta_net(num_bpm=num_bpm)
    assert {m for m in top_level(model) if m.startswith("bpm")} == {
        f"bpm{i}" for i in range(1, num_bpm + 1)}
    bpm_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith("bpm"))
    assert bpm_params == num_bpm * BPM_PARAMS
    assert round(bpm_params / 1e6, 3) == {0: 0.0, 1: 0.254, 2: 0.507, 4: 1.015, 6: 1.522,
                                          8: 2.03}[num_bpm]


@pytest.mark.parametrize("bpm, kept", [("to_motion", ["conv7", "conv12", "conv_f5", "conv_f8"]),
                                       ("to_appearance", ["conv1", "conv6", "conv_f1", "conv_f4"])])
def test_simplex_bpm_has_only_the_updated_side(bpm, kept):
    state = meta_net(bpm=bpm).state_dict()
    units = {k.split(".")[1] for k in state if k.startswith("bpm1.")}
    assert set(kept) <= units and len(units) == 10  # 6 resize units + 4 fusion pairs
    dropped = {"to_motion": ["conv1", "conv_f1"], "to_appearance": ["conv7", "conv_f5"]}[bpm]
    assert not set(dropped) & units


@pytest.mark.parametrize("streams, suffix, reduce, decoder",
                         [("appearance", "_rgb", "reduce_a", "output_s"),
                          ("motion", "_flow", "reduce_m", "output_e")])
def test_single_stream_has_one_stream_one_reduce_one_decoder(streams, suffix, reduce, decoder):
    model = meta_net(streams=streams)
    assert top_level(model) == {"resnet", f"{reduce}1", f"{reduce}2", f"{reduce}3", f"{reduce}4",
                                decoder}
    streams_present = {k.split(".")[1] for k in model.state_dict() if k.startswith("resnet.")}
    assert all(name.endswith(suffix) for name in streams_present)
    # one ResNet-50 stream without fc + DimReduce + decoder
    assert sum(p.numel() for p in model.parameters()) == 23_508_032 + 197_376 + 167_265


# ----------------------------------------------------------------------------- behaviour

@functools.lru_cache(maxsize=None)
def _fusion_net(rcam: str) -> FSNet:
    """A meta-device network whose level-2 fusion modules alone are real (default init)."""
    model = copy.deepcopy(meta_net(rcam=rcam))
    torch.manual_seed(0)
    model._add_fusion(2, 512)
    return model


def _level_fusion(rcam: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return _fusion_net(rcam)._fuse(2, x, y)


def test_simplex_rcam_gates_one_side_by_the_other_sides_descriptor():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 512, 8, 8, generator=gen), torch.randn(2, 512, 8, 8, generator=gen)
    zero, x_flipped = torch.zeros_like(x), x.flip(-1)  # same channel means (GAP) as x
    # App => Mo: appearance enters ungated; motion is gated by a function of GAP(x) only.
    assert torch.equal(_level_fusion("app2mo", x, zero), x)
    gated = _level_fusion("app2mo", x, y) - x
    assert torch.allclose(gated, _level_fusion("app2mo", x_flipped, y) - x_flipped, atol=1e-6)
    assert not torch.allclose(gated, y)
    # App <= Mo: the mirror image.
    assert torch.equal(_level_fusion("mo2app", zero, y), y)
    gated = _level_fusion("mo2app", x, y) - y
    assert torch.allclose(gated, _level_fusion("mo2app", x, y.flip(-1)) - y.flip(-1), atol=1e-6)
    # duplex gates both sides: neither enters as it is
    assert not torch.allclose(_level_fusion("duplex", x, zero), x)


def test_concat_fusion_is_one_affine_map_of_both_features():
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 512, 8, 8, generator=gen), torch.randn(2, 512, 8, 8, generator=gen)
    zero = torch.zeros_like(x)
    bias = _level_fusion("concat", zero, zero)
    twice = _level_fusion("concat", 2 * x, 2 * y) - bias
    assert torch.allclose(twice, 2 * (_level_fusion("concat", x, y) - bias), atol=1e-4)
    assert not torch.allclose(_level_fusion("concat", x, zero), bias)  # both sides enter
    assert not torch.allclose(_level_fusion("concat", zero, y), bias)


def _outputs(model: FSNet, image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model.eval()(image, flow)


@pytest.mark.parametrize("name, ignored", [("appearance", "flow"), ("motion", "image")])
def test_single_stream_output_ignores_the_other_input(name, ignored):
    model, (image, flow) = small_net(name), inputs()
    other = inputs(seed=5)[0]
    pred_s, pred_e = _outputs(model, image, flow)
    changed = _outputs(model, *((image, other) if ignored == "flow" else (other, flow)))
    assert torch.equal(pred_s, changed[0]) and torch.equal(pred_s, pred_e)
    used = _outputs(model, *((other, flow) if ignored == "flow" else (image, other)))
    assert not torch.allclose(pred_s, used[0])


def test_two_stream_variants_use_both_inputs():
    image, flow = inputs()
    model = small_net("vanilla")
    assert not torch.allclose(_outputs(model, image, flow)[0],
                              _outputs(model, image, inputs(seed=5)[1])[0])


@pytest.mark.parametrize("name, untouched", [("app2mo_to_motion", 0), ("mo2app_to_appearance", 1)])
def test_simplex_bpm_leaves_one_output_independent_of_the_bpms(name, untouched):
    """``to_motion`` BPMs never change the fused side (so not ``pred_s``), ``to_appearance``
    BPMs never change the motion side (so not ``pred_e``); the other output does change."""
    model, (image, flow) = small_net(name), inputs()
    before = _outputs(model, image, flow)
    with torch.no_grad():
        for index in range(1, model.config.num_bpm + 1):
            for param in getattr(model, f"bpm{index}").parameters():
                param.mul_(1.5)
    after = _outputs(model, image, flow)
    assert torch.equal(before[untouched], after[untouched])
    assert not torch.allclose(before[1 - untouched], after[1 - untouched])
    s, e = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8)
    s_list, e_list = [s, s[..., :4, :4], s[..., :2, :2], s[..., :1, :1]], [e, e[..., :4, :4],
                                                                           e[..., :2, :2], e[..., :1, :1]]
    out = model.bpm1(s_list, e_list)[untouched]
    assert all(a is b for a, b in zip(out, (s_list, e_list)[untouched]))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_trainable_parameter_gets_a_gradient(name):
    model = small_net(name).train()
    pred_s, pred_e = model(*inputs())
    target = torch.rand_like(pred_s)
    loss_s, loss_e = train.bce_loss(pred_s, pred_e, target)
    (loss_s + loss_e).backward()  # the training loss
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and [n for n, p in trainable if p.grad is None] == []
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(n.startswith(("RGBF_conv3", "resnet.conv1.", "resnet.bn1.")) for n in frozen)
    assert bool(frozen) == (name == "released")


@pytest.mark.parametrize("name, backend", [("app2mo_to_motion", "eager"), ("motion", "jit"),
                                           ("vanilla", "eager"), ("mo2app_to_appearance", "eager"),
                                           ("appearance", "eager")])
def test_fast_path_equals_the_plain_forward(name, backend):
    """BN folded, motion-side work skipped, traced (jit) or not: ``pred_s`` is unchanged."""
    model, (image, flow) = small_net(name), inputs()
    reference = _outputs(model, image, flow)[0]
    with torch.no_grad():
        assert torch.allclose(model.predict_appearance(image, flow), reference, atol=1e-6)
    fast = build_fast_model(model, backend=backend)
    assert (fast(image, flow) - reference).abs().max() <= 1e-4 * reference.abs().max()


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime missing")
@pytest.mark.parametrize("name", ["vanilla", "motion"])
def test_onnx_export_of_a_variant_matches_pytorch(name):
    from lib.export import OnnxPredictor, check_export, export_bytes
    model = small_net(name).eval()
    check = check_export(model, OnnxPredictor(export_bytes(model, SIZE)), (2, 3, SIZE, SIZE))
    assert check.passed, str(check)


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip_rebuilds_the_variant(tmp_path: Path):
    model = small_net("appearance")
    path = tmp_path / "app.pth"
    save_checkpoint(checkpoint_dict(model, prefix="module.", epoch=3), path)
    loaded = build_fsnet(path)
    assert loaded.config == model.config and not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    image, flow = inputs()
    reference = _outputs(model, image, flow)[0]
    assert torch.equal(_outputs(loaded, image, flow)[0], reference)
    # inference rebuilds it from the file alone (here its folded, eager backend)
    predictor = load_predictor(str(path), torch.device("cpu"), backend="eager").predictor
    assert torch.allclose(predictor(image, flow), reference, atol=1e-4)
    with pytest.raises(ValueError) as error:  # loaded as another variant: one line, both named
        build_fsnet(path, expected=SMALL)
    message = str(error.value)
    assert "\n" not in message and "with streams='appearance', not the expected streams='both'" in message


def test_file_without_config_is_the_release_only_when_its_keys_say_so(tmp_path: Path):
    released = meta_net().state_dict()
    assert Checkpoint(tmp_path / "r.pth", released, None).config() == FSNetConfig("resnet50")
    path = tmp_path / "bare.pth"
    torch.save(_small_net("motion").state_dict(), path)
    with pytest.raises(ValueError) as error:
        build_fsnet(path)
    message = str(error.value)
    assert "\n" not in message and "bare.pth records no 'config'" in message and "missing" in message


def test_damaged_config_entry_is_refused():
    with pytest.raises(ValueError, match="x.pth: invalid 'config' entry.*rcam"):
        config_from_dict({**asdict(SMALL), "rcam": "half"}, "x.pth")
    with pytest.raises(ValueError, match="not an FSNet configuration"):
        config_from_dict({"layers": 3}, "x.pth")


def test_init_from_a_full_model_reports_what_it_did_not_use():
    full = _small_net("released").state_dict()
    with torch.device("meta"):
        variant = FSNet(replace(SMALL, rcam="concat", num_bpm=2, bpm="to_motion"))
    variant.to_empty(device="cpu")
    report = init_from_state(variant, {f"module.{k}": v for k, v in full.items()})
    own = variant.state_dict()
    assert all(torch.equal(own[k], full[k]) for k in report.loaded) and len(report.loaded) > 1000
    assert sorted(report.missing) == sorted(k for k in own if k.startswith("fuse_"))
    unused = set(report.unused)
    assert {"atten_rgb_0.1.weight", "bpm3.conv1.conv.conv_bn.0.weight", "RGBF_conv3.conv_bn.0.weight",
            "bpm1.conv_f1.0.conv_bn.0.weight", "resnet.conv1.weight"} <= unused
    assert "bpm1.conv_f5.0.conv_bn.0.weight" not in unused


def test_single_stream_finetune_starts_from_its_one_stage(tmp_path: Path):
    stage = _small_net("appearance")
    path = tmp_path / "last.pth"
    save_checkpoint(checkpoint_dict(stage, epoch=1), path)
    model = FSNet(stage.config)
    assert init_finetune(model, path, None) == []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stage.state_dict().items())
    with pytest.raises(ValueError, match="holds an FSNet with streams='appearance' but this run "
                                         "trains streams='motion'"):
        init_finetune(FSNet(replace(stage.config, streams="motion")), None, path)


# ----------------------------------------------------------------------------- train.py

def _train_main(capsys, *argv: str) -> str:
    assert train.main(["--train_type", *argv]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, fragment", [
    (["pretrain_flow", "--streams", "appearance"], "no pretrain_flow stage"),
    (["pretrain_rgb", "--streams", "motion"], "no pretrain_rgb stage"),
    (["finetune", "--streams", "motion", "--rgb_ckpt", "x.pth"], "--rgb_ckpt does not apply"),
    (["finetune", "--streams", "motion", "--num_bpm", "2"], "num_bpm=2 does not apply"),
    (["finetune", "--num_bpm", "0", "--bpm", "to_motion"], "has no BPMs"),
    (["finetune", "--num_bpm", "-3"], "integer >= 0"),
])
def test_train_refuses_bad_architecture_flags(capsys, argv, fragment):
    assert fragment in _train_main(capsys, *argv)


def test_variant_flag_resolves_and_conflicts(capsys):
    pytest.importorskip("experiments.variants")
    name = "t3-app"  # Table 3, "App.": appearance stream only
    config = train.parse_config(["--train_type", "finetune", "--variant", name])
    assert config.streams == "appearance" and train.model_config(config).streams == "appearance"
    assert "disagrees with --streams both" in _train_main(
        capsys, "finetune", "--variant", name, "--streams", "both")
    assert "no-such-row" in _train_main(capsys, "finetune", "--variant", "no-such-row")


def test_resume_refuses_another_configuration(tmp_path: Path, capsys):
    saved = train.TrainConfig(train_type="finetune", backbone="resnet50", streams="appearance")
    last = tmp_path / "last.pth"
    torch.save({"model": {"a": torch.zeros(1)}, "optimizer": {}, "epoch": 0, "batch_in_epoch": 0,
                "rng": [], "args": asdict(saved),
                "config": asdict(FSNetConfig("resnet50", streams="appearance"))}, last)
    line = _train_main(capsys, "finetune", "--backbone", "resnet50", "--resume", str(last),
                       "--save_path", str(tmp_path / "runs"), "--data_root", str(tmp_path / "data"),
                       "--device", "cpu")
    assert f"Cannot resume from {last}: it trains an FSNet with streams='appearance', this run " \
           "asks for streams='both'" in line
