"""Inference support: the prediction loop, post-processing, DenseCRF and overlay GIFs."""
