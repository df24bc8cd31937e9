"""Losses for training on soft targets (FER+ vote distributions) and on imbalanced classes."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def logit_shift(prior, tau: float) -> np.ndarray:
    """TAU * log prior per class, the head start each class gets in training (and loses when served).

    A class with no training targets gets the shift of the most frequent class. log 0 (or a floor
    such as log 1e-6 = -13.8) would make it the rarest class by far: removed at serving, that shift
    lifts it above every class the model did learn, and it is called on every face. With no
    evidence for the class there is no rarity to correct, so it gets no head start over any class.
    """
    prior = np.asarray(prior, np.float64)
    present = prior > 0
    log_prior = np.log(np.maximum(prior, 1e-6))
    log_prior[~present] = log_prior[present].max()
    return (tau * log_prior).astype(np.float32)


@keras.saving.register_keras_serializable(package="moodlens")
class LogitAdjustedCrossEntropy(keras.losses.Loss):
    """Cross-entropy of targets against softmax(logits + TAU * log prior), from the model's probabilities.

    Logit adjustment (Menon et al. 2021, "Long-tail learning via logit adjustment"): the
    model is trained as if frequent classes had a head start of TAU * log prior, so what it
    serves, softmax(logits), leans away from them by as much. With soft targets the prior is
    the share of each class in the summed targets.

    Args:
        prior: share of each class in the training targets (sums to 1; a class with none: `logit_shift`).
        tau: strength; 0 is plain cross-entropy, 1 the Bayes-optimal shift for balanced error.
        label_smoothing: as in `keras.losses.CategoricalCrossentropy`.
    """

    def __init__(
        self, prior, tau: float = 1.0, label_smoothing: float = 0.0, name="logit_adjusted_cross_entropy", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.prior = [float(p) for p in prior]
        self.tau = float(tau)
        self.label_smoothing = float(label_smoothing)
        self._shift = logit_shift(self.prior, self.tau)

    def call(self, y_true, y_pred):
        logits = ops.log(ops.maximum(y_pred, 1e-7)) + self._shift
        return keras.losses.categorical_crossentropy(
            y_true, logits, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "prior": self.prior, "tau": self.tau, "label_smoothing": self.label_smoothing}
