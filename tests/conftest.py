"""Tests never download weights: ``FSNET_OFFLINE=1`` holds for the test process and every CLI it
starts (tests/test_weights.py lifts it where it serves files itself, through ``file://`` URLs)."""
import os

os.environ["FSNET_OFFLINE"] = "1"
