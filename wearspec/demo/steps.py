"""The demo's steps, in the order they run.

Its own module so that the recipe (which runs them) and the report (which reads their records,
``OUTPUT/steps/<step>.json``) both import it without importing each other.
"""

STEPS = ("data", "pretrain", "probe", "finetune", "export", "stream", "engine", "report")
