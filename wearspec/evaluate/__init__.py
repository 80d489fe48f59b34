"""Frozen-feature evaluation: linear probe, k-NN, per-subject metrics, plots."""
