"""``wearspec demo``: the whole pipeline on one store, ending in a report (see :mod:`wearspec.demo.recipe`)."""

from wearspec.demo.recipe import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
