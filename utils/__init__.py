"""Everything that feeds or serves the network, grouped by concern.

Top-level modules are the shared I/O layer (``io``, ``cli``, ``safety``, ``checkpoint``) and the
command-line tools (``toy``, ``davis_import``; ``flow`` is run as ``python -m utils.flow``).
Subpackages: ``data`` (datasets, image reading, transforms, toy set, DAVIS import), ``flow``
(optical flow and its colour coding), ``training`` (distributed set-up, train state, stage
chaining, run info), ``inference`` (prediction loop, post-processing, DenseCRF, overlays).
"""
