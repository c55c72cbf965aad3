"""An ablation table from its rows' results: ``table{N}.json`` and ``table{N}.md``.

Each row pools its seeds: the measured S and MAE are the mean over seeds (with the sample
standard deviation beside it when there are several), the seconds their sum.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence

from experiments.variants import Variant
from utils.io import write_text

METRICS = ("S", "MAE")
QUICK_NOTE = ("NOT A REPRODUCTION: --quick trains every stage for one step on the toy set "
              "(random initialisation, 64×64, two samples), only to check the pipeline end to end. Compare "
              "nothing here with the paper.")


def _pool(values: Sequence[float]) -> tuple[float, Optional[float]]:
    """Mean and sample standard deviation (``None`` for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def table_row(variant: Variant, results: Sequence[dict[str, Any]], quick: bool) -> dict[str, Any]:
    """The JSON row of ``variant`` from the results of its seeds (``runner.run_row``)."""
    cost = results[0]["cost"]
    datasets = list(results[0]["measured"])
    pooled = {name: {metric: _pool([r["measured"][name][metric] for r in results])
                     for metric in METRICS} for name in datasets}
    return {
        "table": variant.table, "row": variant.row, "name": variant.name,
        "config": results[0]["config"], "paper": variant.paper, "paper_cost": variant.paper_cost,
        "measured": {name: {m: pooled[name][m][0] for m in METRICS} for name in datasets},
        "measured_std": {name: {m: pooled[name][m][1] for m in METRICS} for name in datasets},
        "seeds": [r["seed"] for r in results],
        "bpm_params_m": cost["bpm_params_m"], "bpm_gflops": cost["bpm_gflops"],
        "params_m": cost["params_m"], "gflops": cost["gflops"],
        "maps": results[0]["maps"], "checkpoint": results[0]["checkpoint"],
        "seconds": sum(r["seconds"] for r in results),
        "runs": [{key: r[key] for key in ("seed", "measured", "maps", "checkpoint", "seconds")}
                 for r in results],
        "quick": quick,
    }


def _cell(value: Optional[float], std: Optional[float] = None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def format_markdown(table: int, rows: Sequence[dict[str, Any]], header: str) -> str:
    """The table as Markdown: per dataset S and MAE measured beside the paper's, then the BPM
    stack's cost, wall time and checkpoint."""
    datasets = list(dict.fromkeys(name for row in rows for name in row["measured"]))
    columns = ["row", "variant"]
    for name in datasets:
        columns += [f"{name} S", f"{name} S paper", f"{name} MAE", f"{name} MAE paper"]
    columns += ["BPM params (M)", "BPM G MACs", "seconds", "checkpoint"]
    lines = [f"# Table {table}", "", header, "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["row"], f"`{row['name']}`"]
        for name in datasets:
            paper = row["paper"].get(name, {})
            for metric in METRICS:
                cells += [_cell(row["measured"].get(name, {}).get(metric),
                                row["measured_std"].get(name, {}).get(metric)),
                          _cell(paper.get(metric))]
        cells += [f"{row['bpm_params_m']:.3f}", f"{row['bpm_gflops']:.3f}",
                  f"{row['seconds']:.0f}", f"`{row['checkpoint']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(out: Path, table: int, rows: Sequence[dict[str, Any]], header: str) -> list[Path]:
    """Write ``out/table{N}.json`` (a list, one row object per line) and ``out/table{N}.md``."""
    json_path, md_path = out / f"table{table}.json", out / f"table{table}.md"
    write_text(json_path, "[\n" + ",\n".join(json.dumps(row, ensure_ascii=False) for row in rows)
               + "\n]\n")
    write_text(md_path, format_markdown(table, rows, header))
    return [json_path, md_path]
