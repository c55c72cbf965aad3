"""Evaluate sequences (read, decode, score every evaluated frame), optionally in worker processes.

Sequences are independent, so ``workers > 1`` maps them over a process pool; results come back
in submission order and every number is computed by the same code on the same data, so the
output does not depend on the number of workers.
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

from eval.sod.images import Note, read_gt, read_prediction
from eval.sod.metrics import FrameScores, frame_scores
from eval.sod.tree import SequencePlan
from utils.cli import ignore_interrupts

NAN_NOTE = "nan_score"


@dataclass(frozen=True)
class SequenceResult:
    """Frame scores of one sequence and the notes raised while decoding its files."""

    job: SequencePlan
    frames: list[FrameScores]
    notes: list[Note]


def evaluate_sequence(job: SequencePlan) -> SequenceResult:
    """Score every evaluated frame of ``job`` (inputs are only read)."""
    frames: list[FrameScores] = []
    notes: list[Note] = []
    for name in job.frames:
        gt, gt_notes = read_gt(job.gt_dir / name)
        pred, pred_notes = read_prediction(job.pred_dir / name, gt.shape)
        scores = frame_scores(pred, gt)
        notes += gt_notes + pred_notes
        if any(math.isnan(getattr(scores, key)) for key in ("S", "wF", "adpF", "adpE", "MAE")):
            notes.append(Note(NAN_NOTE, str(job.pred_dir / name)))
        frames.append(scores)
    return SequenceResult(job, frames, notes)


def run_sequences(jobs: Iterable[SequencePlan], workers: int = 1) -> Iterator[SequenceResult]:
    """Evaluate ``jobs`` in order, in ``workers`` processes when ``workers > 1``."""
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        yield from map(evaluate_sequence, jobs)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=ignore_interrupts) as pool:
        yield from pool.map(evaluate_sequence, jobs)
