"""Shared utilities: atomic file output, distributed helpers, checkpoints, logging, seeding."""
