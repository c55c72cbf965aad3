"""The paper's ablation studies as data and as runs: ``variants`` (every row of Tables 3–5 with
its configuration and the paper's numbers), ``ablation`` (train, predict and score a table:
``python -m experiments.ablation``), ``cost`` (Table 4's parameter and FLOP columns)."""
