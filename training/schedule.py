"""Learning-rate schedule: linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="moodlens")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Warm up linearly for `warmup_steps`, then follow a cosine from `peak` to 0 at `total_steps`."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * step / max(1, self.warmup_steps)
        progress = ops.clip((step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps), 0.0, 1.0)
        cosine = 0.5 * self.peak * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}
