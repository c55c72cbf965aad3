"""V-SOD evaluation with the semantics of FSNet's ``eval/main_VSOD.m`` (DAVSOD toolbox).

Modules, one job each:

* :mod:`eval.sod.tree` - find datasets, sequences and the evaluated GT frames; check the
  prediction tree (missing files, short sequences, stray entries) before any work is done.
* :mod:`eval.sod.images` - decode GT masks and predictions the way MATLAB's ``imread`` /
  ``rgb2gray`` / ``im2double`` / ``mapminmax`` see them (grey-level conversion, bit depth).
* :mod:`eval.sod.resize` - MATLAB ``imresize`` (bicubic, antialiasing) for predictions whose size
  differs from the GT (in memory only).
* :mod:`eval.sod.metrics` - per-frame S, E, F, weighted F and MAE.
* :mod:`eval.sod.aggregate` - the ``main_VSOD.m`` aggregation (per sequence, then per dataset).
* :mod:`eval.sod.runner` - evaluate sequences, optionally in worker processes.
* :mod:`eval.sod.report` - table, CSV and JSON output.
* :mod:`eval.sod.plot` - optional PR and F-threshold curves (matplotlib).
"""
