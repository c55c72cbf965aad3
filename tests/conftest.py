"""Tests never download weights: ``FSNET_OFFLINE=1`` holds for the test process and every CLI it
starts (tests/test_weights.py lifts it where it serves files itself, through ``file://`` URLs)."""
import atexit
import os
import shutil
import tempfile

os.environ["FSNET_OFFLINE"] = "1"
# The export cache of inference.py / utils.export goes to a temporary folder (removed when the
# test process ends), not the user's torch hub folder.
if "FSNET_CACHE_DIR" not in os.environ:
    os.environ["FSNET_CACHE_DIR"] = tempfile.mkdtemp(prefix="fsnet-test-export-cache-")
    atexit.register(shutil.rmtree, os.environ["FSNET_CACHE_DIR"], ignore_errors=True)

# Under pytest-xdist (``-n 2``) every worker and the processes it starts use one thread: two
# workers with two OpenMP threads each on two cores would stall each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
