"""experiments/: the named rows against the paper's tables, the runner's command line and bad
inputs, ``--quick`` end to end (its numbers re-scored by eval.vsod), resuming, Table 4's cost
columns and the SLURM job a row would be submitted as."""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, replace
from pathlib import Path

import pytest

import train
from eval import vsod
from experiments import ablation, runner
from experiments.cost import measure_cost
from experiments.launch import LaunchOptions, launch, make_executor
from experiments.report import table_row, write_table
from experiments.runner import QUICK_RECIPE, Machine, RowRun, dataset_label, is_done
from experiments.variants import VARIANTS, get_variant, table_rows
from lib.fsnet import FSNetConfig
from utils.cli import UserError
from tests.cli_checks import REPO, assert_user_error, checksums

PAPER = REPO.parent / "shared" / "reference" / "paper_ablations.md"
JSON_KEYS = {"table", "row", "config", "paper", "measured", "bpm_params_m", "bpm_gflops", "maps",
             "seconds"}
RCAM_ARROWS = {"App ⇒ Mo": "app2mo", "App ⇐ Mo": "mo2app", "App ⇔ Mo": "duplex"}
BPM_ARROWS = {"(App + Mo) ⇒ Mo": "to_motion", "(App + Mo) ⇐ Mo": "to_appearance",
              "(App + Mo) ⇔ Mo": "duplex"}


# ----------------------------------------------------------------------------- the registry

def _paper_tables() -> dict[int, list[list[str]]]:
    """The body rows (cells) of the reference file's Tables 3, 4 and 5."""
    tables: dict[int, list[list[str]]] = {}
    current = None
    for line in PAPER.read_text().splitlines():
        heading = re.match(r"## Table (\d)", line)
        if heading:
            current = tables.setdefault(int(heading.group(1)), [])
        elif line.startswith("## "):
            current = None
        elif current is not None and line.startswith("|") and not line.startswith("|---"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
    return {number: rows[1:] for number, rows in tables.items()}  # without the header line


def _scores(cell: str) -> dict[str, float]:
    s, mae = (float(v) for v in re.fullmatch(r"(\.\d+) / (\.\d+)", cell).groups())
    return {"S": s, "MAE": mae}


def _expected_rows() -> dict[int, dict[str, tuple[FSNetConfig, dict, dict | None]]]:
    """``{table: {row label: (configuration, paper scores, paper cost)}}`` read from the paper
    reference, the configuration derived from the table's columns."""
    base = FSNetConfig(backbone="resnet50")
    expected: dict[int, dict] = {3: {}, 4: {}, 5: {}}
    for label, app, mo, rcam, bpm, davis, mcl in _paper_tables()[3]:
        if not (app and mo):
            config = replace(base, streams="appearance" if app else "motion")
        else:
            config = replace(base, rcam="duplex" if rcam else "concat", num_bpm=4 if bpm else 0)
        expected[3][label] = (config, {"DAVIS-16": _scores(davis), "MCL": _scores(mcl)}, None)
    for n, params, flops, runtime, davis, mcl in _paper_tables()[4]:
        cost = {"bpm_params_m": float(params), "bpm_gflops": float(flops),
                "runtime_s": float(runtime)}
        expected[4][f"N = {n}"] = (replace(base, num_bpm=int(n)),
                                   {"DAVIS-16": _scores(davis), "MCL": _scores(mcl)}, cost)
    for rcam, bpm, davis, mcl in _paper_tables()[5]:
        config = replace(base, rcam=RCAM_ARROWS[rcam], bpm=BPM_ARROWS[bpm])
        expected[5][f"{rcam} / {bpm}"] = (config, {"DAVIS-16": _scores(davis),
                                                   "MCL": _scores(mcl)}, None)
    return expected


@pytest.mark.skipif(not PAPER.is_file(), reason="the paper reference (../shared) is not here")
def test_registry_holds_every_row_of_the_paper_with_its_numbers() -> None:
    expected = _expected_rows()
    assert sum(map(len, expected.values())) == 16
    for table, rows in expected.items():
        registered = {v.row: (v.config, v.paper, v.paper_cost) for v in table_rows(table)}
        assert registered == rows, f"table {table}"


def test_registry_names_are_unique_and_lookups_fail_clearly() -> None:
    assert len(VARIANTS) == 16 and len({v.name for v in VARIANTS.values()}) == 16
    assert get_variant("t4-n2").config.num_bpm == 2
    with pytest.raises(ValueError, match="t3-fsnet.*t5-duplex"):
        get_variant("t9-nothing")
    for variant in VARIANTS.values():
        assert variant.config.backbone == "resnet50"
        assert set(variant.paper) == {"DAVIS-16", "MCL"}
        assert (variant.paper_cost is not None) == (variant.table == 4)


def test_list_prints_every_row(capsys: pytest.CaptureFixture) -> None:
    assert ablation.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(VARIANTS)
    for line, variant in zip(lines, VARIANTS.values()):
        assert line.startswith(variant.name) and variant.row in line
        assert f"S {variant.paper['MCL']['S']:.3f}" in line


# ----------------------------------------------------------------------------- cost

def _check_paper_cost(name: str, bpm_params_m: float, bpm_gflops: float) -> None:
    paper = get_variant(name).paper_cost
    assert round(bpm_params_m, 3) == paper["bpm_params_m"], name
    assert abs(bpm_gflops - paper["bpm_gflops"]) <= 0.02 * paper["bpm_gflops"], name


@pytest.mark.parametrize("name", ["t4-n2", "t4-n8"])
def test_table4_bpm_parameters_exact_and_flops_within_two_percent(name: str) -> None:
    cost = measure_cost(get_variant(name).config)
    _check_paper_cost(name, cost.bpm_params_m, cost.bpm_gflops)
    assert cost.params_m == cost.stored_params_m  # a variant stores only what it runs


def test_cost_only_prints_and_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--table", "4", "--rows", "t4-n4", "t4-n6", "--cost_only", "--cost_size", "32",
            "--cost_repeats", "1", "--device", "cpu", "--out", str(tmp_path)]
    assert ablation.main(argv) == 0
    out = capsys.readouterr().out
    assert "| N = 4 | `t4-n4` | 1.015 | 1.015 | 3.139 | 3.163 |" in out
    assert re.search(r"\| N = 4 \| .* \| 1\.00 \| — \|", out)
    rows = json.loads((tmp_path / "cost_table4.json").read_text())
    for row in rows:
        _check_paper_cost(row["name"], row["bpm_params_m"], row["bpm_gflops"])
    released = rows[0]
    assert released["stored_params_m"] == pytest.approx(102.301698)  # the release's count
    assert released["params_m"] == pytest.approx(83.415746)  # without the never-run modules
    assert (tmp_path / "cost_table4.md").read_text() in out


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("argv, fragments", [
    (["--table", "3", "--rows", "t4-n2", "--quick"], ["t4-n2", "t3-app", "t3-fsnet"]),
    (["--table", "4", "--quick", "--seeds", "1", "1"], ["--seeds"]),
    (["--quick"], ["--table"]),
    (["--table", "4", "--out", "{out}"], ["--data_root"]),
    (["--table", "4", "--data_root", "{tmp}/absent", "--out", "{out}"], ["absent"]),
    (["--table", "4", "--quick", "--datasets", "DAVIS", "--data_root", "{data}"], ["DAVIS"]),
])
def test_bad_arguments_give_one_error_line(argv: list[str], fragments: list[str],
                                           tmp_path: Path, toy_root: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    values = {"out": str(out), "tmp": str(tmp_path), "data": str(toy_root)}
    argv = [a.format(**values) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    before = checksums(toy_root)
    code = ablation.main(argv)
    assert_user_error(code, capsys.readouterr().err, *fragments)
    assert checksums(toy_root) == before
    assert not out.exists() or not any(p for p in out.rglob("*") if p.name.startswith("table"))


def test_slurm_job_is_configured_from_the_flags(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    options = LaunchOptions("slurm", partition="gpu", account="lab", gpus_per_row=4,
                            cpus_per_task=8, mem_gb=128, timeout_min=600)
    executor = make_executor(options, tmp_path / "submitit")
    script = executor._executor._make_submission_file_text("python -m job", "0")
    for line in ("--partition=gpu", "--account=lab", "--gpus-per-node=4", "--ntasks-per-node=1",
                 "--nodes=1", "--cpus-per-task=8", "--mem=128GB", "--time=600"):
        assert f"#SBATCH {line}" in script, line


def test_several_gpus_train_each_stage_under_torchrun(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    variant = get_variant("t5-mo2app-toapp")
    run = RowRun(name=variant.name, table=5, config=variant.config, seed=2, folder=tmp_path / "row",
                 data_root=tmp_path / "data", datasets=("DAVIS",), recipe=runner.PAPER_RECIPE,
                 machine=Machine(processes=4))
    commands = []
    monkeypatch.setattr(runner.subprocess, "run", lambda command, check: commands.append(command)
                        or subprocess.CompletedProcess(command, 0))
    runner.train_stage(run, "pretrain_flow")
    (command,) = commands
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert Path(command[5]) == REPO / "train.py"
    config = train.parse_config(command[6:])  # the command line gives back the stage's config
    assert config == runner.train_config(run, "pretrain_flow")
    assert (config.rcam, config.bpm, config.seed, config.resume) == ("mo2app", "to_appearance", 2, "auto")
    monkeypatch.setattr(runner.subprocess, "run",
                        lambda command, check: subprocess.CompletedProcess(command, 1))
    with pytest.raises(UserError, match="pretrain_flow of row t5-mo2app-toapp stopped"):
        runner.train_stage(run, "pretrain_flow")


def test_running_under_torchrun_is_refused(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("LOCAL_RANK", "0")
    code = ablation.main(["--table", "3", "--quick", "--out", "unused"])
    assert_user_error(code, capsys.readouterr().err, "--gpus_per_row")


# ----------------------------------------------------------------------------- quick, end to end

@pytest.fixture(scope="module")
def quick_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Table 3 in --quick mode (the toy set generated into <out>/toy-data)."""
    out = tmp_path_factory.mktemp("ablation")
    assert ablation.main(["--table", "3", "--quick", "--out", str(out)]) == 0
    return out


@pytest.fixture
def toy_root(quick_table: Path) -> Path:
    return quick_table / "toy-data"


def test_quick_table_numbers_equal_eval_vsod_on_its_maps(quick_table: Path) -> None:
    rows = json.loads((quick_table / "table3.json").read_text())
    assert [row["name"] for row in rows] == [v.name for v in table_rows(3)]
    test_root = quick_table / "toy-data" / "TestSet"
    for row, variant in zip(rows, table_rows(3)):
        assert JSON_KEYS <= set(row)
        assert (row["table"], row["row"], row["paper"]) == (3, variant.row, variant.paper)
        assert FSNetConfig(**row["config"]) == variant.config
        scores = vsod.evaluate(row["maps"], test_root, ["Toy"])["datasets"]["Toy"]
        assert row["measured"] == {dataset_label("Toy"): {"S": scores["S"], "MAE": scores["MAE"]}}
        assert Path(row["checkpoint"]).is_file() and row["seconds"] > 0
        assert sorted(Path(row["maps"]).glob("Toy/*/*.png"))
    markdown = (quick_table / "table3.md").read_text()
    assert "NOT A REPRODUCTION" in markdown and "| App. | `t3-app` |" in markdown


def test_finished_rows_are_not_run_again(quick_table: Path, capsys: pytest.CaptureFixture) -> None:
    results = {p: p.stat().st_mtime_ns for p in quick_table.glob("*/result.json")}
    assert ablation.main(["--table", "3", "--quick", "--out", str(quick_table)]) == 0
    assert "6 of 6 row run(s) finished, 0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in results} == results


def test_row_folder_of_another_configuration_is_refused(quick_table: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    before = _fingerprint(quick_table)
    code = ablation.main(["--table", "3", "--quick", "--out", str(quick_table),
                          "--backbone", "res2net50"])
    assert_user_error(code, capsys.readouterr().err, "t3-app", "another configuration", "config")
    assert _fingerprint(quick_table) == before


def _fingerprint(root: Path) -> dict[str, object]:
    """Checksums of every file under ``root`` but the checkpoints (size and mtime for those)."""
    sums: dict[str, object] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".pth":
            sums[str(path)] = (path.stat().st_size, path.stat().st_mtime_ns)
        else:
            sums.update(checksums(path))
    return sums


def test_interrupted_row_keeps_its_finished_stages(toy_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    variant = get_variant("t3-app")
    run = RowRun(name=variant.name, table=3, config=variant.config, seed=0,
                 folder=tmp_path / variant.name, data_root=toy_root, datasets=("Toy",),
                 recipe=QUICK_RECIPE, machine=Machine(device="cpu", workers=0))

    def interrupted(config: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(runner.inference, "predict", interrupted)
        with pytest.raises(KeyboardInterrupt):
            runner.run_row(run)
    lasts = sorted((run.folder / "train").glob("*/last.pth"))
    assert [p.parent.name for p in lasts] == ["finetune", "pretrain_rgb"]
    stamps = {p: p.stat().st_mtime_ns for p in lasts}
    assert not is_done(run)
    result = runner.run_row(run)
    assert {p: p.stat().st_mtime_ns for p in lasts} == stamps  # no stage trained again
    assert is_done(run) and result["measured"]["Toy"]["S"] >= 0
    assert set(json.loads((run.folder / "phases.json").read_text())) == {
        "train pretrain_rgb", "train finetune", "maps", "eval.vsod"}


def test_seeds_are_pooled_as_mean_and_std(tmp_path: Path) -> None:
    variant = get_variant("t4-n0")
    cost = measure_cost(variant.config)
    results = [{"name": variant.name, "seed": seed, "config": asdict(variant.config),
                "measured": {"DAVIS-16": {"S": s, "MAE": 0.02}}, "maps": f"m{seed}",
                "checkpoint": f"c{seed}", "seconds": 10.0, "cost": asdict(cost)}
               for seed, s in ((0, 0.8), (1, 0.9))]
    row = table_row(variant, results, quick=False)
    assert row["measured"]["DAVIS-16"]["S"] == pytest.approx(0.85)
    assert row["measured_std"]["DAVIS-16"]["S"] == pytest.approx(0.0707107)
    assert row["seconds"] == 20.0 and row["seeds"] == [0, 1] and row["bpm_params_m"] == 0
    json_path, md_path = write_table(tmp_path, 4, [row], "header")
    assert json.loads(json_path.read_text())[0]["measured"] == row["measured"]
    assert "| N = 0 | `t4-n0` | 0.850 ± 0.071 | 0.900 | 0.020 ± 0.000 | 0.027 |" in md_path.read_text()


def test_submitit_local_job_returns_the_row_result(quick_table: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A row handed to a submitit job (here a finished one: the job only reads its result)."""
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    variant = get_variant("t3-app")
    run = RowRun(name=variant.name, table=3, config=variant.config, seed=0,
                 folder=quick_table / variant.name, data_root=quick_table / "toy-data",
                 datasets=("Toy",), recipe=QUICK_RECIPE, machine=Machine(device="cpu", workers=0))
    options = LaunchOptions("submitit_local", gpus_per_row=0, cpus_per_task=1, mem_gb=4,
                            timeout_min=10)
    results = launch([run], options, tmp_path / "submitit")
    assert results == [json.loads((run.folder / "result.json").read_text())]
