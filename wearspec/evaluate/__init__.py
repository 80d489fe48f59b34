"""Frozen-feature evaluation: linear probe, k-NN, the classical-features baseline, per-subject metrics, plots."""
