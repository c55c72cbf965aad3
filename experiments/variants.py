"""Every row of the FSNet paper's ablation Tables 3, 4 and 5 as a named :class:`Variant`.

A variant is data: the paper's table and row label, the :class:`lib.fsnet.FSNetConfig` that
builds it, and the paper's numbers (S-measure and MAE on DAVIS-16 and MCL; Table 4 also gives
the BPM stack's parameters, FLOPs and runtime). ``python -m experiments.ablation --list`` prints
them; ``python train.py --variant NAME`` trains one. Definitions: docs/ablations.md.

The configurations keep ``backbone="resnet50"``, the paper's backbone; the runner replaces it
with its ``--backbone``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from lib.fsnet import FSNetConfig
from utils.cli import BadInputError

#: The paper's test sets (its labels) and their folder names under ``<data_root>/TestSet``.
PAPER_DATASETS = {"DAVIS-16": "DAVIS", "MCL": "MCL"}
PAPER_BACKBONE = "resnet50"
TABLES = (3, 4, 5)


@dataclass(frozen=True)
class Variant:
    """One row of an ablation table.

    ``paper``: ``{"DAVIS-16"|"MCL": {"S": float, "MAE": float}}``. ``paper_cost`` (Table 4
    only): ``{"bpm_params_m", "bpm_gflops", "runtime_s"}`` as printed (runtime on their GPU).
    """

    name: str
    table: int
    row: str
    config: FSNetConfig
    paper: dict[str, dict[str, float]]
    paper_cost: Optional[dict[str, float]] = field(default=None)


def _scores(davis: tuple[float, float], mcl: tuple[float, float]) -> dict[str, dict[str, float]]:
    """The paper's ``(S, MAE)`` pairs on DAVIS-16 and MCL as ``{dataset: {"S", "MAE"}}``."""
    return {name: {"S": s, "MAE": mae} for name, (s, mae) in zip(PAPER_DATASETS, (davis, mcl))}


def _config(**fields: object) -> FSNetConfig:
    return FSNetConfig(backbone=PAPER_BACKBONE, **fields)


_TABLE3 = (
    ("t3-app", "App.", _config(streams="appearance"), (.834, .047), (.754, .038)),
    ("t3-mo", "Mo.", _config(streams="motion"), (.858, .039), (.763, .053)),
    ("t3-vanilla", "Vanilla", _config(rcam="concat", num_bpm=0), (.894, .027), (.808, .041)),
    ("t3-rel", "Rel.", _config(num_bpm=0), (.900, .025), (.833, .031)),
    ("t3-bipurf", "Bi-Purf.", _config(rcam="concat"), (.904, .026), (.855, .023)),
    ("t3-fsnet", "FSNet", _config(), (.920, .020), (.864, .023)),
)
# N, BPM params (M), BPM FLOPs (G MACs at 352x352), runtime (s/frame), DAVIS-16, MCL
_TABLE4 = (
    (0, 0.000, 0.000, 0.03, (.900, .027), (.833, .031)),
    (2, 0.507, 1.582, 0.05, (.911, .026), (.843, .028)),
    (4, 1.015, 3.163, 0.08, (.920, .020), (.864, .023)),
    (6, 1.522, 4.745, 0.10, (.918, .023), (.863, .023)),
    (8, 2.030, 6.327, 0.13, (.920, .023), (.864, .023)),
)
_RCAM_LABELS = {"app2mo": "App ⇒ Mo", "mo2app": "App ⇐ Mo", "duplex": "App ⇔ Mo"}
_BPM_LABELS = {"to_motion": "(App + Mo) ⇒ Mo", "to_appearance": "(App + Mo) ⇐ Mo",
               "duplex": "(App + Mo) ⇔ Mo"}
# name, RCAM, BPM, DAVIS-16, MCL
_TABLE5 = (
    ("t5-app2mo-tomo", "app2mo", "to_motion", (.896, .026), (.816, .038)),
    ("t5-app2mo-toapp", "app2mo", "to_appearance", (.902, .025), (.832, .031)),
    ("t5-mo2app-tomo", "mo2app", "to_motion", (.891, .029), (.806, .039)),
    ("t5-mo2app-toapp", "mo2app", "to_appearance", (.897, .028), (.840, .028)),
    ("t5-duplex", "duplex", "duplex", (.920, .020), (.864, .023)),
)


def _all_variants() -> list[Variant]:
    rows = [Variant(name, 3, label, config, _scores(davis, mcl))
            for name, label, config, davis, mcl in _TABLE3]
    rows += [Variant(f"t4-n{n}", 4, f"N = {n}", _config(num_bpm=n), _scores(davis, mcl),
                     {"bpm_params_m": params, "bpm_gflops": gflops, "runtime_s": runtime})
             for n, params, gflops, runtime, davis, mcl in _TABLE4]
    rows += [Variant(name, 5, f"{_RCAM_LABELS[rcam]} / {_BPM_LABELS[bpm]}",
                     _config(rcam=rcam, bpm=bpm), _scores(davis, mcl))
             for name, rcam, bpm, davis, mcl in _TABLE5]
    return rows


#: Every named row, in table order.
VARIANTS: dict[str, Variant] = {variant.name: variant for variant in _all_variants()}


def table_rows(table: int) -> list[Variant]:
    """The rows of ``table`` (3, 4 or 5) in the paper's order."""
    return [variant for variant in VARIANTS.values() if variant.table == table]


def get_variant(name: str) -> Variant:
    """The named row; for an unknown name a ``BadInputError`` (a ``ValueError``) listing the
    valid names."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise BadInputError(f"unknown variant {name!r}",
                            f"use one of {', '.join(VARIANTS)}") from None
