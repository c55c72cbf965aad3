"""Scoring sequences: chunks of frames in parallel processes, then the toolbox statistics.

Work is split into chunks of consecutive scored frames; each chunk reads its own PNGs, so only
small result lists cross process boundaries. Results are put back by position, so they do not
depend on the number of workers or on completion order.
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from utils.cli import ignore_interrupts, progress as progress_bar

from .boundary import f_measure
from .io import SequenceJob, read_gt, read_prediction
from .region import jaccard
from .statistics import average, region_statistics, stability_mean
from .temporal import T_SCALE, contour_descriptor, descriptor_stability

METRICS = ("J", "F", "T")
CHUNK = 6  # scored frames per task


@dataclass(frozen=True)
class Chunk:
    """Scored frames ``lo .. hi-1`` of one sequence; T pairs (k, k+1) for k in that range."""

    job: SequenceJob
    lo: int
    hi: int
    metrics: tuple[str, ...]
    threshold: float | None
    with_t: bool


def score_chunk(chunk: Chunk) -> dict[str, list[float]]:
    """Per-frame J and F and per-pair T (without the x5) of one chunk."""
    job, out = chunk.job, {}
    last_scored = len(job.gt_paths) - 2
    t_end = min(chunk.hi, last_scored) if chunk.with_t else chunk.lo - 1
    preds = {k: read_prediction(job.pred_paths[k], job.size, chunk.threshold)
             for k in range(chunk.lo, max(chunk.hi - 1, t_end) + 1)}
    if "J" in chunk.metrics or "F" in chunk.metrics:
        gts = {k: read_gt(job.gt_paths[k]) for k in range(chunk.lo, chunk.hi)}
        if "J" in chunk.metrics:
            out["J"] = [jaccard(preds[k], gts[k]) for k in range(chunk.lo, chunk.hi)]
        if "F" in chunk.metrics:
            out["F"] = [f_measure(preds[k], gts[k]) for k in range(chunk.lo, chunk.hi)]
    if chunk.with_t:
        desc = {k: contour_descriptor(preds[k]) for k in range(chunk.lo, t_end + 1)}
        out["T"] = [descriptor_stability(desc[k], desc[k + 1]) for k in range(chunk.lo, t_end)]
    return out


def _chunks(job: SequenceJob, metrics: tuple[str, ...], threshold: float | None,
            with_t: bool) -> list[Chunk]:
    n = len(job.gt_paths)
    return [Chunk(job, lo, min(lo + CHUNK, n - 1), metrics, threshold, with_t)
            for lo in range(1, n - 1, CHUNK)]


def score_sequences(jobs: list[SequenceJob], metrics: tuple[str, ...], threshold: float | None,
                    t_sequences: set[str], workers: int = 1, progress: bool = True
                    ) -> dict[str, dict[str, list[float]]]:
    """Per-frame values of every sequence: {seq: {"J": [...], "F": [...], "T": [...]}}."""
    chunks = [c for job in jobs for c in _chunks(job, metrics, threshold,
                                                 "T" in metrics and job.name in t_sequences)]
    results: dict[int, dict[str, list[float]]] = {}
    total = sum(c.hi - c.lo for c in chunks)
    with progress_bar(total=total, unit="frame", desc="DAVIS-2016", enabled=progress) as bar:
        if workers <= 1:
            for index, chunk in enumerate(chunks):
                results[index] = score_chunk(chunk)
                bar.update(chunk.hi - chunk.lo)
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=ignore_interrupts) as pool:
                futures = {pool.submit(score_chunk, c): i for i, c in enumerate(chunks)}
                for future in as_completed(futures):
                    index = futures[future]
                    results[index] = future.result()
                    bar.update(chunks[index].hi - chunks[index].lo)
    merged: dict[str, dict[str, list[float]]] = {job.name: {} for job in jobs}
    for index, chunk in enumerate(chunks):
        for key, values in results[index].items():
            merged[chunk.job.name].setdefault(key, []).extend(values)
    return merged


def _clean(value: float | None) -> float | None:
    """NaN -> None (JSON null); other values unchanged."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def summarise(jobs: list[SequenceJob], per_frame: dict[str, dict[str, list[float]]],
              metrics: tuple[str, ...], t_sequences: set[str]) -> dict:
    """The report dict: per-sequence statistics and values, then the averages over sequences.

    Per-frame T entries are per consecutive pair, multiplied by 5 like the sequence value."""
    sequences, overall = {}, {}
    for job in jobs:
        values = per_frame[job.name]
        entry: dict = {"n_frames": len(job.gt_paths)}
        for key in ("J", "F"):
            if key in metrics:
                entry[key] = region_statistics(np.asarray(values[key]))
        if "T" in metrics:
            evaluated = job.name in t_sequences
            t_mean = stability_mean(np.asarray(values["T"])) if evaluated else math.nan
            entry["T"] = {"mean": _clean(t_mean), "evaluated": evaluated}
        entry["per_frame"] = {key: [_clean(v) for v in values[key]] for key in ("J", "F")
                              if key in metrics}
        if "T" in metrics:
            entry["per_frame"]["T"] = [_clean(T_SCALE * v) for v in values.get("T", [])]
        sequences[job.name] = entry
    for key in ("J", "F"):
        if key in metrics:
            overall[key] = {stat: _clean(average([s[key][stat] for s in sequences.values()]))
                            for stat in ("mean", "recall", "decay")}
    if "T" in metrics:
        t_values = [s["T"]["mean"] for s in sequences.values() if s["T"]["evaluated"]]
        overall["T"] = {"mean": _clean(average([math.nan if v is None else v for v in t_values]))}
    return {"overall": overall, "sequences": sequences}
