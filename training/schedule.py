"""Learning-rate schedule: linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="moodlens")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Warm up linearly for `warmup_steps`, then follow a cosine from `peak` to 0 at `total_steps`.

    `start_step` is how far along the run was when this optimizer took its first step: a run
    continued with a fresh optimizer (its checkpoint kept only weights) counts its steps from 0,
    because Adam's bias correction needs them to, while the cosine must go on where it was.
    `rewarm_steps` ramps that fresh optimizer linearly up to the cosine over its first steps, while
    its moments refill.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int, start_step: int = 0, rewarm_steps: int = 0):
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.start_step = start_step
        self.rewarm_steps = rewarm_steps

    def __call__(self, step):
        own_step = ops.cast(step, "float32")
        step = own_step + self.start_step
        warm = self.peak * step / max(1, self.warmup_steps)
        progress = ops.clip((step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps), 0.0, 1.0)
        cosine = 0.5 * self.peak * (1.0 + ops.cos(math.pi * progress))
        rate = ops.where(step < self.warmup_steps, warm, cosine)
        if self.rewarm_steps:
            rate = rate * ops.clip((own_step + 1.0) / self.rewarm_steps, 0.0, 1.0)
        return rate

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "start_step": self.start_step,
            "rewarm_steps": self.rewarm_steps,
        }
