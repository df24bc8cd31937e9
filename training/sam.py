"""Sharpness-aware minimisation (SAM, Foret et al. 2021) as a Keras train step on TensorFlow.

Each step takes the batch's gradient, moves the weights `rho` along it (normalised), takes the
gradient again there, moves back and lets the optimizer apply that second gradient: the weights
are pushed towards minima whose neighbourhood is low too, which tends to generalise better. The
step costs two forward and backward passes.
"""

from __future__ import annotations

import types


def sharpness_aware(model, rho: float) -> None:
    """Make `model.fit` take SAM steps of radius `rho` (0: leave the model's own step).

    The step replaces the compiled model's `train_step` on this instance instead of subclassing
    the model, so checkpoints stay plain functional models that calibration, export and the
    server load as they are; a resumed run calls this again (`training.train`)."""
    if rho <= 0:
        return
    import keras
    import tensorflow as tf

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        weights = self.trainable_variables

        def loss_and_gradients():
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            return y_pred, loss, tape.gradient(loss, weights)

        y_pred, loss, gradients = loss_and_gradients()
        scale = rho / (tf.linalg.global_norm(gradients) + 1e-12)
        ascent = [None if gradient is None else gradient * scale for gradient in gradients]
        for weight, step in zip(weights, ascent, strict=True):
            if step is not None:
                weight.assign_add(step)
        _, _, sharp_gradients = loss_and_gradients()
        for weight, step in zip(weights, ascent, strict=True):
            if step is not None:
                weight.assign_sub(step)
        self.optimizer.apply_gradients(zip(sharp_gradients, weights, strict=True))
        # the logged loss and metrics are those of the weights before the step, as Keras' own step logs
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(y_pred)[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    model.train_step = types.MethodType(train_step, model)
