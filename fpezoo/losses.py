"""Keypoint losses for ``model.compile``: L1, L2, Wing and Adaptive Wing, and a depth L1.

Every loss takes ``y_true`` of shape ``(N, K, 3)`` (x, y, visibility, in
model-input pixels, see ``docs/DESIGN.md``). :class:`L1Loss`, :class:`L2Loss`
and :class:`WingLoss` take predicted keypoints ``(N, K, 2)``;
:class:`AdaptiveWingLoss` takes predicted heatmaps ``(N, H, W, K)``.

Reduction (the same for all four):

1. a per-point loss ``l_nk``: summed over the x and y coordinates for the
   coordinate losses, averaged over the heatmap pixels for Adaptive Wing;
2. per face, the weighted mean over its visible points,
   ``L_n = sum_k w_k v_nk l_nk / sum_k w_k v_nk``, where ``v_nk`` is 1 for a
   visible point and 0 otherwise (occluded or unlabelled points contribute
   nothing, and their coordinates may be NaN) and ``w_k`` are the region
   weights (all 1 by default). A face with no visible point gives 0;
3. Keras's reduction over the batch (default ``"sum_over_batch_size"``: the
   mean over faces, with ``sample_weight`` applied per face). A batch with no
   visible point gives 0, not NaN.

Region weights follow TAO FPENet's ``weights_dict`` groups, ``{"face", "eyes",
"mouth", "pupil"}``, expanded to one weight per keypoint by
:meth:`fpezoo.schemes.KeypointScheme.keypoint_weights` (missing keys weigh 1).
Because step 2 divides by the weights of the visible points, only their ratios
matter: TAO's weights (which must sum to 1) and any multiple of them give the
same loss.

Relation to TAO FPENet's ``FpeLoss``: TAO masks occluded points by zeroing
them, weights the per-region losses and sums them, and reduces differently per
loss type (L1: sum over the batch and mean over points and coordinates;
squared Euclidean: the same times ``kpts_coeff = 0.01``; Wing: mean over the
batch of the sum over points and coordinates, times 0.01). Those choices only
rescale the loss (and, for the unmasked denominators, let faces with many
occluded points weigh less); here one reduction serves every loss, so that the
loss value is a per-point quantity independent of K and of the batch size. Use
``loss_weights`` in ``compile`` to rescale.

:class:`DepthL1Loss` trains the depth of a 3D model (``fpezoo.FAN(dimensions=3)``):
``y_true`` ``(N, K, 4)`` = x, y, visibility, z (the pipeline's ``depth=True``
targets) against predicted keypoints ``(N, K, 3)``, on z only and free of the
depth's arbitrary offset.
"""

import math

import keras
import numpy as np
from keras import ops

from fpezoo import schemes
from fpezoo.coordinates import rescale_points
from fpezoo.metrics import masked_difference, resolve_scheme, scheme_name, split_labels


class _KeypointLoss(keras.losses.Loss):
    """Shared visibility masking, region weighting and reduction."""

    def __init__(self, scheme=None, region_weights=None, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if region_weights is not None and not isinstance(region_weights, dict):
            raise TypeError(
                "region_weights must be a dict such as {'face': 1, 'eyes': 2, 'mouth': 2, "
                f"'pupil': 1}}. Received: region_weights={region_weights!r}"
            )
        self.scheme = scheme_name(scheme)
        self.region_weights = None if region_weights is None else dict(region_weights)
        self._scheme_argument = scheme
        if scheme is not None and region_weights is not None:
            self.keypoint_weights(schemes.get_scheme(scheme).num_keypoints)  # fails early on bad weights

    def keypoint_weights(self, num_keypoints):
        """The ``(K,)`` float32 weights for ``num_keypoints`` points (ones without region weights)."""
        if self.region_weights is None:
            return np.ones((num_keypoints,), dtype="float32")
        resolved = resolve_scheme(self._scheme_argument, num_keypoints)
        return np.asarray(resolved.keypoint_weights(self.region_weights), dtype="float32")

    def reduce_points(self, point_losses, visible):
        """Per-face weighted mean over visible points of ``(N, K)`` point losses."""
        weights = ops.cast(visible, point_losses.dtype) * ops.convert_to_tensor(
            self.keypoint_weights(point_losses.shape[-1]), dtype=point_losses.dtype
        )
        return ops.divide_no_nan(
            ops.sum(point_losses * weights, axis=-1), ops.sum(weights, axis=-1)
        )

    def get_config(self):
        return {
            **super().get_config(),
            "dtype": self._dtype_policy.name,
            "scheme": self.scheme,
            "region_weights": self.region_weights,
        }


class _CoordinateLoss(_KeypointLoss):
    """Base of the losses on predicted keypoints ``(N, K, 2)``."""

    def point_loss(self, difference):
        """Elementwise loss of the ``(N, K, 2)`` coordinate differences."""
        raise NotImplementedError

    def call(self, y_true, y_pred):
        _check_labels(y_true, y_pred.shape[:-1])
        if y_pred.shape[-1] != 2:
            raise ValueError(
                "Predicted keypoints must have shape (N, K, 2). "
                f"Received: y_pred.shape={tuple(y_pred.shape)}"
            )
        target, visible = split_labels(y_true)
        difference = masked_difference(y_pred, target, visible)
        point_losses = ops.sum(self.point_loss(difference), axis=-1)
        return self.reduce_points(point_losses, visible)


def _check_labels(y_true, expected_leading_shape):
    """Checks that ``y_true`` is (N, K, 3) with K matching the predictions."""
    shape = tuple(y_true.shape)
    expected = tuple(expected_leading_shape)
    if len(shape) != 3 or shape[-1] != 3 or (
        shape[1] is not None and expected[-1] is not None and shape[1] != expected[-1]
    ):
        raise ValueError(
            f"y_true must have shape (N, K, 3) = x, y, visibility with K = {expected[-1]} "
            f"(the predicted keypoints). Received: y_true.shape={shape}"
        )


@keras.saving.register_keras_serializable(package="fpezoo")
class L1Loss(_CoordinateLoss):
    """Manhattan distance ``|dx| + |dy|`` per point (TAO FPENet's ``l1``).

    Args:
        scheme: keypoint scheme name (or None: chosen by keypoint count), used
            only with ``region_weights``.
        region_weights: optional ``{"face", "eyes", "mouth", "pupil"}`` weights.
        name: loss name.
        reduction: Keras reduction over faces.
        dtype: computation dtype (default float32; float16 predictions are cast).
    """

    def __init__(self, scheme=None, region_weights=None, name="l1_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(scheme, region_weights, name, reduction, dtype)

    def point_loss(self, difference):
        return ops.abs(difference)


@keras.saving.register_keras_serializable(package="fpezoo")
class L2Loss(_CoordinateLoss):
    """Squared Euclidean distance ``dx^2 + dy^2`` per point (TAO's ``square_euclidean``).

    Args: as :class:`L1Loss`.
    """

    def __init__(self, scheme=None, region_weights=None, name="l2_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(scheme, region_weights, name, reduction, dtype)

    def point_loss(self, difference):
        return ops.square(difference)


@keras.saving.register_keras_serializable(package="fpezoo")
class WingLoss(_CoordinateLoss):
    """Wing loss of Feng et al., "Wing Loss for Robust Facial Landmark
    Localisation with Convolutional Neural Networks" (CVPR 2018).

    On each coordinate difference ``x`` (in pixels)::

        wing(x) = w * ln(1 + |x| / epsilon)   if |x| < w
                  |x| - C                     otherwise,  C = w - w * ln(1 + w / epsilon)

    summed over x and y. The defaults ``width=10, curvature=2`` are TAO FPENet's
    (``w = 10``, ``epsilon = 2``).

    Args:
        width: ``w``, the half-width of the logarithmic part, in pixels (> 0).
        curvature: ``epsilon``, the curvature of the logarithmic part (> 0).
        scheme, region_weights, name, reduction, dtype: as :class:`L1Loss`.
    """

    def __init__(self, width=10.0, curvature=2.0, scheme=None, region_weights=None,
                 name="wing_loss", reduction="sum_over_batch_size", dtype=None):
        _check_positive(width=width, curvature=curvature)
        super().__init__(scheme, region_weights, name, reduction, dtype)
        self.width = float(width)
        self.curvature = float(curvature)

    def point_loss(self, difference):
        absolute = ops.abs(difference)
        offset = self.width - self.width * math.log1p(self.width / self.curvature)
        return ops.where(
            absolute < self.width,
            self.width * ops.log1p(absolute / self.curvature),
            absolute - offset,
        )

    def get_config(self):
        return {**super().get_config(), "width": self.width, "curvature": self.curvature}


def _check_positive(**values):
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")


def gaussian_heatmaps(keypoints, heatmap_size, sigma):
    """Renders one unnormalised Gaussian per keypoint, peak 1 at the (sub-pixel) point.

    ``h_k(u, v) = exp(-((u - x_k)^2 + (v - y_k)^2) / (2 sigma^2))`` with pixel
    centres at integer ``(u, v)``.

    Args:
        keypoints: ``(N, K, 2)`` points in heatmap pixels (finite).
        heatmap_size: ``(H, W)``.
        sigma: standard deviation in heatmap pixels.

    Returns:
        ``(N, H, W, K)`` heatmaps in the keypoints' dtype.
    """
    height, width = heatmap_size
    dtype = keypoints.dtype
    columns = ops.cast(ops.arange(width), dtype)
    rows = ops.cast(ops.arange(height), dtype)
    x = keypoints[:, None, None, :, 0]
    y = keypoints[:, None, None, :, 1]
    squared_distance = ops.square(columns[None, None, :, None] - x) + ops.square(
        rows[None, :, None, None] - y
    )
    return ops.exp(-squared_distance / (2.0 * sigma * sigma))


@keras.saving.register_keras_serializable(package="fpezoo")
class AdaptiveWingLoss(_KeypointLoss):
    """Adaptive Wing loss on heatmaps, Wang et al., "Adaptive Wing Loss for Robust
    Face Alignment via Heatmap Regression" (ICCV 2019).

    Takes ``y_true`` keypoints ``(N, K, 3)`` and predicted heatmaps
    ``(N, H, W, K)``, and renders the targets itself: the keypoints are mapped
    from the ``input_size`` frame to the ``H x W`` heatmap frame with
    :func:`fpezoo.coordinates.rescale_points` and each becomes a Gaussian of
    standard deviation ``sigma`` heatmap pixels with peak 1
    (:func:`gaussian_heatmaps`). Per pixel, with target ``y`` and prediction
    ``p``::

        AWing = omega * ln(1 + |(y - p) / epsilon|^(alpha - y))   if |y - p| < theta
                A * |y - p| - C                                    otherwise

    (``A`` and ``C`` make it continuous and smooth at ``theta``), multiplied by
    the paper's weight map ``1 + foreground_weight * M`` where ``M`` is the
    3x3-dilated mask ``target >= foreground_threshold``. Each heatmap's loss is
    the mean over its pixels; invisible points' heatmaps are masked out and the
    heatmaps are then reduced as the other losses (weighted mean over visible
    points, mean over faces). Defaults are the paper's
    (omega 14, theta 0.5, epsilon 1, alpha 2.1, W 10, threshold 0.2, sigma 1 on
    64x64 heatmaps).

    Use it on a model (or sub-model) whose output is the heatmaps, before any
    decoding layer.

    Args:
        input_size: ``(height, width)`` of the frame the labels are in (the
            model input); None when the labels are already in heatmap pixels.
        sigma: Gaussian standard deviation in heatmap pixels.
        omega, theta, epsilon, alpha: the Adaptive Wing parameters.
        foreground_weight: ``W`` of the weight map (0 disables it).
        foreground_threshold: target value above which a pixel is foreground.
        scheme, region_weights, name, reduction, dtype: as :class:`L1Loss`.
    """

    def __init__(self, input_size=None, sigma=1.0, omega=14.0, theta=0.5, epsilon=1.0,
                 alpha=2.1, foreground_weight=10.0, foreground_threshold=0.2, scheme=None,
                 region_weights=None, name="adaptive_wing_loss",
                 reduction="sum_over_batch_size", dtype=None):
        _check_positive(sigma=sigma, omega=omega, theta=theta, epsilon=epsilon, alpha=alpha)
        if alpha <= 1:
            raise ValueError(f"alpha must be greater than 1 (alpha - y >= 1 keeps the loss "
                             f"smooth at 0). Received: alpha={alpha}")
        if not (isinstance(foreground_weight, (int, float)) and foreground_weight >= 0):
            raise ValueError("foreground_weight must be a non-negative number. "
                             f"Received: foreground_weight={foreground_weight!r}")
        if input_size is not None:
            if len(input_size) != 2 or min(input_size) <= 0:
                raise ValueError("input_size must be (height, width) with positive sizes. "
                                 f"Received: input_size={input_size!r}")
            input_size = (int(input_size[0]), int(input_size[1]))
        super().__init__(scheme, region_weights, name, reduction, dtype)
        self.input_size = input_size
        self.sigma = float(sigma)
        self.omega = float(omega)
        self.theta = float(theta)
        self.epsilon = float(epsilon)
        self.alpha = float(alpha)
        self.foreground_weight = float(foreground_weight)
        self.foreground_threshold = float(foreground_threshold)

    def call(self, y_true, y_pred):
        if len(y_pred.shape) != 4:
            raise ValueError(
                "AdaptiveWingLoss takes predicted heatmaps of shape (N, H, W, K). "
                f"Received: y_pred.shape={tuple(y_pred.shape)}"
            )
        _check_labels(y_true, (y_pred.shape[0], y_pred.shape[-1]))
        heatmap_size = (y_pred.shape[1], y_pred.shape[2])
        keypoints, visible = split_labels(y_true)
        keypoints = ops.where(visible[..., None], keypoints, ops.zeros_like(keypoints))
        if self.input_size is not None:
            keypoints = rescale_points(keypoints, self.input_size, heatmap_size)
        target = gaussian_heatmaps(keypoints, heatmap_size, self.sigma)
        pixel_losses = self.adaptive_wing(target, y_pred) * self.weight_map(target)
        heatmap_losses = ops.mean(pixel_losses, axis=(1, 2))
        return self.reduce_points(heatmap_losses, visible)

    def adaptive_wing(self, target, predicted):
        """Elementwise Adaptive Wing loss of target and predicted heatmaps."""
        absolute = ops.abs(target - predicted)
        power = self.alpha - target
        ratio = self.theta / self.epsilon
        ratio_power = ops.power(ratio, power)
        slope = (self.omega / (1.0 + ratio_power)) * power * ops.power(ratio, power - 1.0) / self.epsilon
        offset = self.theta * slope - self.omega * ops.log1p(ratio_power)
        return ops.where(
            absolute < self.theta,
            self.omega * ops.log1p(ops.power(absolute / self.epsilon, power)),
            slope * absolute - offset,
        )

    def weight_map(self, target):
        """``1 + W * M``, M the 3x3 grey dilation of ``target >= threshold``."""
        foreground = ops.cast(target >= self.foreground_threshold, target.dtype)
        dilated = ops.max_pool(foreground, pool_size=3, strides=1, padding="same")
        return 1.0 + self.foreground_weight * dilated

    def get_config(self):
        return {
            **super().get_config(),
            "input_size": self.input_size,
            "sigma": self.sigma,
            "omega": self.omega,
            "theta": self.theta,
            "epsilon": self.epsilon,
            "alpha": self.alpha,
            "foreground_weight": self.foreground_weight,
            "foreground_threshold": self.foreground_threshold,
        }


@keras.saving.register_keras_serializable(package="fpezoo")
class DepthL1Loss(keras.losses.Loss):
    """Offset-free L1 error of the predicted depth, ``mean_k |z'_pred - z'_true|``.

    Depth labels (a 3D face model's z, e.g. the 3DDFA_V2 teacher's) have an
    arbitrary offset per face, so both the prediction and the target lose their
    per-face mean over the K points before the comparison (``z' = z - mean_k z``).
    Every point counts, whatever its 2D visibility: a label file's depth is
    known for all points (an occluded or out-of-crop point still has a depth),
    and the 2D visibility column is ignored. The per-face value is in the
    labels' units (model-input pixels); Keras reduces it over the batch.

    Args:
        name: loss name.
        reduction: Keras reduction over faces.
        dtype: computation dtype (default float32).

    Call arguments:
        y_true: ``(N, K, 4)`` = x, y, visibility, z.
        y_pred: ``(N, K, 3)`` keypoints with depth (only z is used).
    """

    def __init__(self, name="depth_l1_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        if len(y_true.shape) != 3 or y_true.shape[-1] != 4:
            raise ValueError(
                "y_true must have shape (N, K, 4) = x, y, visibility, z (depth targets). "
                f"Received: y_true.shape={tuple(y_true.shape)}"
            )
        if len(y_pred.shape) != 3 or y_pred.shape[-1] != 3:
            raise ValueError(
                "Predicted keypoints must have shape (N, K, 3) = x, y, z (a 3D model). "
                f"Received: y_pred.shape={tuple(y_pred.shape)}"
            )
        target = ops.cast(y_true[..., 3], self.dtype)
        predicted = ops.cast(y_pred[..., 2], self.dtype)
        target = target - ops.mean(target, axis=-1, keepdims=True)
        predicted = predicted - ops.mean(predicted, axis=-1, keepdims=True)
        return ops.mean(ops.abs(predicted - target), axis=-1)
