"""Pieces shared by every model builder."""

import keras


@keras.saving.register_keras_serializable(package="fpezoo")
class LandmarkModel(keras.Model):
    """A functional model returning ``[keypoints, confidence]``.

    Its losses and metrics apply to the keypoints output, so a single loss works
    in ``compile``, as it does for a one-output model::

        model.compile(optimizer="adam", loss=fpezoo.losses.WingLoss())
        model.fit(images, labels)   # labels: (N, K, 3) = x, y, visibility

    The confidence output carries no loss: it is derived from the same heatmaps
    (or fixed) and is for the user, as in TAO's FPENet.
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, y, _keypoints_output(y_pred), sample_weight, training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, _keypoints_output(y_pred), sample_weight)


def _keypoints_output(y_pred):
    if isinstance(y_pred, (list, tuple)):
        return y_pred[0]
    return y_pred
