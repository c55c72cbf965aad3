"""The paper's ablation studies as data and as runs: ``variants`` (every row of Tables 3–5 with
its configuration and the paper's numbers), ``runner`` (one row: train, maps, scores), ``launch``
(here or as submitit/SLURM jobs), ``report`` (the table files), ``cost`` (Table 4's parameter and
FLOP columns) and ``ablation`` (the command line, ``python -m experiments.ablation``).
docs/ablations.md describes them."""
