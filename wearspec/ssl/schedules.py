"""Moved to :mod:`wearspec.training.schedules`; these names stay importable from here until every import is
switched (``wearspec.ssl.losses`` re-exports ``teacher_temperature_schedule`` through this path)."""

from wearspec.training.schedules import (cosine_schedule, ema_update, is_no_decay, lr_schedule,  # noqa: F401
                                         momentum_schedule, param_groups, scaled_lr, teacher_temperature_schedule,
                                         wd_schedule)
