"""The one training harness that pretraining and fine-tuning call (runtime settings, amp, schedules, the loop)."""
