"""Sharpness-aware minimisation (SAM, Foret et al. 2021) as a Keras train step on TensorFlow.

Each step takes the batch's gradient, takes it again at the weights shifted `rho` along it
(normalised), and lets the optimizer apply that second gradient at the unshifted weights: the
weights are pushed towards minima whose neighbourhood is low too, which tends to generalise
better. The step costs two forward and backward passes.
"""

from __future__ import annotations

import types


def sharpness_aware(model, rho: float) -> None:
    """Make `model.fit` take SAM steps of radius `rho` (0: leave the model's own step).

    The step replaces the compiled model's `train_step` on this instance instead of subclassing
    the model, so checkpoints stay plain functional models that calibration, export and the
    server load as they are; a resumed run calls this again (`training.train`).

    The second pass is stateless, from the state the first pass started with: BatchNorm's moving
    statistics are updated once a step, from the real weights (not again from the shifted ones),
    dropout draws the same masks in both passes, and the weights are never moved, so nothing has
    to be restored. Losses added by layers (`add_loss`, regularizers) do not reach the second pass;
    these models have none."""
    if rho <= 0:
        return
    import keras
    import tensorflow as tf

    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError("--sam does not scale its losses: train without mixed precision")

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        weights = self.trainable_variables
        state = [tf.identity(variable) for variable in self.non_trainable_variables]
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        gradients = tape.gradient(loss, weights)
        scale = rho / (tf.linalg.global_norm(gradients) + 1e-12)
        shifted = [
            tf.identity(weight) if gradient is None else weight + gradient * scale
            for weight, gradient in zip(weights, gradients, strict=True)
        ]
        with tf.GradientTape() as tape:
            tape.watch(shifted)
            shifted_pred, _ = self.stateless_call(shifted, state, x, training=True)
            shifted_loss = self.compute_loss(x=x, y=y, y_pred=shifted_pred, sample_weight=sample_weight, training=True)
        self.optimizer.apply_gradients(zip(tape.gradient(shifted_loss, shifted), weights, strict=True))
        # the logged loss and metrics are those of the weights before the step, as Keras' own step logs
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(y_pred)[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    model.train_step = types.MethodType(train_step, model)
