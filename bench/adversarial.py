"""Adversarial training on the embedding, played on validation data: `bench/defaults.py` with
Miyato, Dai and Goodfellow's (2017) loss.

    python bench/adversarial.py [--datasets sst2 mr subj bbc_news] [--seeds 1 2 3] \
        --variant today= adv5=+adversarial_epsilon=5.0

Not a pipeline setting. In this process a variant with `+adversarial_epsilon=E` trains on the
label's loss plus the same loss with each text's embedded tokens moved by E along the gradient of
the loss (normalised over the text's real tokens: r = E g / ||g||), the direction that hurts the
model most to first order; one more forward and backward pass per batch. Everything else is
`bench/defaults.py`: the pipeline's own prepare / build / fit, early stopping on validation, the
validation split scored; the test split is never read.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    import keras
    import tensorflow as tf

    import pipeline.model

    class PerturbedEmbedding(keras.layers.Embedding):
        """Keras's Embedding that keeps its last output and adds ``delta`` to it when set."""

        def call(self, inputs):  # type: ignore[no-untyped-def]
            out = super().call(inputs)
            object.__setattr__(self, "captured", out)
            delta = getattr(self, "delta", None)
            return out if delta is None else out + delta

    class Adversarial(keras.Model):
        """Keras's train_step with the adversarial loss added (one model, two passes per batch)."""

        epsilon = 0.0

        def train_step(self, data):  # type: ignore[no-untyped-def]
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            embedding = self.get_layer("embedding")
            with tf.GradientTape() as tape:
                with tf.GradientTape() as inner:
                    y_pred = self(x, training=True)
                    loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
                g = tf.stop_gradient(inner.gradient(loss, embedding.captured))
                g = g * tf.cast(tf.not_equal(x, 0), g.dtype)[..., None]
                norm = tf.sqrt(tf.reduce_sum(g * g, axis=[1, 2], keepdims=True)) + 1e-12
                object.__setattr__(embedding, "delta", self.epsilon * g / norm)
                y_adv = self(x, training=True)
                object.__setattr__(embedding, "delta", None)
                adv_loss = self.compute_loss(x=x, y=y, y_pred=y_adv, sample_weight=sample_weight, training=True)
                total = loss + adv_loss
            gradients = tape.gradient(total, self.trainable_weights)
            self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
            self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    keras.layers.Embedding = PerturbedEmbedding  # this process only
    build = pipeline.model.build_model

    def build_model(cfg, shape, embedding_matrix=None):  # type: ignore[no-untyped-def]
        model = build(cfg, shape, embedding_matrix=embedding_matrix)
        epsilon = cfg.get("adversarial_epsilon")
        if not epsilon:
            return model
        adversarial = Adversarial(model.inputs, model.outputs, name=model.name)
        adversarial.epsilon = float(epsilon)
        pipeline.model.compile_standard(adversarial, model.optimizer)
        return adversarial

    pipeline.model.build_model = build_model
    from defaults import run_patched  # bench/defaults.py, beside this script

    run_patched()


if __name__ == "__main__":
    main()
