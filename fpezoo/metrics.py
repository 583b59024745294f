"""Landmark accuracy metrics: NME, TAO's region pixel error, AUC, failure rate, CED.

One implementation serves evaluation and training. The per-face and per-point
computations (:func:`per_face_nme`, :func:`point_error_totals`,
:func:`region_mean`) are written once with ``keras.ops``:

- the NumPy functions (:func:`nme`, :func:`region_pixel_error`) run them on
  float64 arrays and return NumPy values, for evaluation scripts;
- the Keras metrics (:class:`NME`, :class:`RegionPixelError`) run them on the
  batch tensors inside ``fit``/``evaluate`` and accumulate over batches.

Dataset-level summaries of per-face errors (:func:`auc_and_failure_rate`,
:func:`ced_curve`, :func:`yaw_binned_mean`) are NumPy only.

Labels follow ``docs/DESIGN.md``: ``y_true`` is ``(N, K, 3)`` = x, y, visibility
in model-input pixels; predictions are ``(N, K, 2)``. A point with visibility 0
(occluded or unlabelled; its coordinates may be NaN) is left out of every error.

Faces without a defined NME get NaN, explicitly: a face with no visible point,
or whose normalising distance is undefined (NaN reference points, or a zero
distance). The Keras :class:`NME` leaves such faces out of its running mean; the
NumPy summaries refuse NaN and say how to drop the faces or count them as
failures.
"""

import keras
import numpy as np
from keras import ops

from fpezoo import schemes

NORMALIZATIONS = ("inter_ocular", "eye_centres", "inter_pupil", "box_diagonal", "box_area")


# ---------------------------------------------------------------------------
# Shared helpers (also used by fpezoo.losses)
# ---------------------------------------------------------------------------


def split_labels(y_true):
    """Splits ``y_true`` ``(N, K, 3)`` into points ``(N, K, 2)`` and a visibility mask.

    Args:
        y_true: labels, x, y and visibility in the last axis.

    Returns:
        ``(points, visible)``: the raw x, y (possibly NaN where not visible) and
        a boolean ``(N, K)`` mask that is True where visibility > 0.
    """
    return y_true[..., :2], y_true[..., 2] > 0


def masked_difference(predicted, target, mask):
    """``predicted - target`` where ``mask`` is True and exactly 0 elsewhere.

    Masked targets may hold NaN (unlabelled points): they affect neither the
    value nor the gradient.

    Args:
        predicted: ``(N, K, 2)`` predicted points.
        target: ``(N, K, 2)`` reference points.
        mask: ``(N, K)`` boolean, True for the points that count.

    Returns:
        ``(N, K, 2)`` differences.
    """
    return ops.where(mask[..., None], predicted - target, ops.zeros_like(predicted))


def resolve_scheme(scheme, num_keypoints):
    """The :class:`fpezoo.schemes.KeypointScheme` for a name, a scheme or a count.

    Args:
        scheme: a scheme name, a ``KeypointScheme``, or None to pick the scheme
            by ``num_keypoints`` (68 -> ibug68, 80 -> tao80, ...).
        num_keypoints: the number of keypoints of the tensors it will index.

    Returns:
        The scheme.

    Raises:
        ValueError: when the scheme's keypoint count differs from ``num_keypoints``.
    """
    if scheme is None:
        return schemes.scheme_for_num_keypoints(int(num_keypoints))
    resolved = schemes.get_scheme(scheme)
    if resolved.num_keypoints != num_keypoints:
        raise ValueError(
            f"Scheme '{resolved.name}' has {resolved.num_keypoints} keypoints but the "
            f"labels have {num_keypoints}. Received: scheme={resolved.name!r}"
        )
    return resolved


def scheme_name(scheme):
    """The name to store in a ``get_config`` for a scheme argument (or None)."""
    if scheme is None or isinstance(scheme, str):
        return scheme
    return scheme.name


# ---------------------------------------------------------------------------
# Core computations, written once with keras.ops
# ---------------------------------------------------------------------------


def point_errors(predicted, target, mask):
    """Euclidean distance of each point, 0 where ``mask`` is False.

    Args:
        predicted: ``(N, K, 2)`` predicted points.
        target: ``(N, K, 2)`` reference points.
        mask: ``(N, K)`` boolean, True for the points that count.

    Returns:
        ``(N, K)`` distances.
    """
    difference = masked_difference(predicted, target, mask)
    return ops.sqrt(ops.sum(ops.square(difference), axis=-1))


def _check_normalization(normalization):
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown NME normalization; expected one of {', '.join(NORMALIZATIONS)}. "
            f"Received: normalization={normalization!r}"
        )


def _as_group(index_or_indices):
    if isinstance(index_or_indices, (int, np.integer)):
        return (int(index_or_indices),)
    return tuple(int(i) for i in index_or_indices)


def reference_groups(normalization, scheme, num_keypoints):
    """The two index groups whose mean points span the normalising distance.

    Args:
        normalization: ``"inter_ocular"`` (outer eye corners),
            ``"eye_centres"`` (means of the two eye groups) or ``"inter_pupil"``
            (the pupils where the scheme has them, otherwise the eye centres,
            which is what "inter-pupil" means for 68-point and 5-point labels).
        scheme: scheme name, ``KeypointScheme`` or None (chosen by count).
        num_keypoints: keypoint count of the labels.

    Returns:
        ``(group_a, group_b)``, tuples of point indices.

    Raises:
        ValueError: when the scheme lacks the points this normalisation needs.
    """
    resolved = resolve_scheme(scheme, num_keypoints)
    if normalization == "inter_ocular":
        pair = resolved.outer_eye_corners
    elif normalization == "eye_centres":
        pair = resolved.eye_centres
    else:
        pair = resolved.pupils if resolved.pupils is not None else resolved.eye_centres
    if pair is None:
        raise ValueError(
            f"Scheme '{resolved.name}' defines no reference points for the "
            f"'{normalization}' normalization; use 'box_diagonal' or 'box_area'. "
            f"Received: normalization={normalization!r}"
        )
    return _as_group(pair[0]), _as_group(pair[1])


def normalizing_distance(target, visible, normalization, scheme=None):
    """The per-face distance an NME divides by.

    ``box_diagonal`` and ``box_area`` use the box of the *visible* reference
    points: its diagonal, or ``sqrt(width * height)`` (the AFLW2000-3D / 3DDFA
    protocol). The other normalisations use the reference points of the scheme
    (see :func:`reference_groups`) whatever their visibility flag, since
    occluded points keep a labelled position; they give NaN when those points are
    unlabelled (NaN).

    Args:
        target: ``(N, K, 2)`` reference points.
        visible: ``(N, K)`` boolean visibility.
        normalization: one of :data:`NORMALIZATIONS`.
        scheme: scheme name, ``KeypointScheme`` or None (chosen by count); only
            needed by the scheme-based normalisations.

    Returns:
        ``(N,)`` distances (inf or NaN where undefined).
    """
    _check_normalization(normalization)
    if normalization in ("box_diagonal", "box_area"):
        x, y = target[..., 0], target[..., 1]
        width = ops.max(ops.where(visible, x, -np.inf), axis=1) - ops.min(
            ops.where(visible, x, np.inf), axis=1
        )
        height = ops.max(ops.where(visible, y, -np.inf), axis=1) - ops.min(
            ops.where(visible, y, np.inf), axis=1
        )
        if normalization == "box_diagonal":
            return ops.sqrt(ops.square(width) + ops.square(height))
        return ops.sqrt(width * height)
    group_a, group_b = reference_groups(normalization, scheme, target.shape[1])
    centre_a = ops.mean(ops.take(target, np.array(group_a), axis=1), axis=1)
    centre_b = ops.mean(ops.take(target, np.array(group_b), axis=1), axis=1)
    return ops.sqrt(ops.sum(ops.square(centre_a - centre_b), axis=-1))


def per_face_nme(predicted, target, visible, normalization="inter_ocular", scheme=None):
    """Normalised mean error of each face (the single implementation).

    ``NME_n = mean_{k visible} ||p_nk - g_nk|| / d_n`` with ``d_n`` from
    :func:`normalizing_distance`. The mean point-to-point error follows
    Sagonas et al., "300 Faces In-the-Wild Challenge" (ICCVW 2013); the
    ``sqrt(w * h)`` box normalisation follows Zhu et al., "Face Alignment Across
    Large Poses: A 3D Solution" (CVPR 2016).

    Args:
        predicted: ``(N, K, 2)`` predicted points.
        target: ``(N, K, 2)`` reference points.
        visible: ``(N, K)`` boolean visibility.
        normalization: one of :data:`NORMALIZATIONS`.
        scheme: scheme name, ``KeypointScheme`` or None (chosen by count).

    Returns:
        ``(N,)`` NME values; NaN for a face with no visible point or an
        undefined (NaN or zero) normalising distance.
    """
    errors = point_errors(predicted, target, visible)
    count = ops.sum(ops.cast(visible, errors.dtype), axis=1)
    distance = normalizing_distance(target, visible, normalization, scheme)
    # NaN > 0 is False, so NaN distances are caught here too.
    valid = ops.logical_and(count > 0, ops.logical_and(distance > 0, distance < np.inf))
    safe_distance = ops.where(valid, distance, ops.ones_like(distance))
    values = ops.sum(errors, axis=1) / ops.maximum(count, 1) / safe_distance
    return ops.where(valid, values, ops.full_like(values, np.nan))


def point_error_totals(predicted, target, mask, scale=None, sample_weight=None):
    """Sum and count of the per-point errors over a batch of faces.

    Args:
        predicted: ``(N, K, 2)`` predicted points.
        target: ``(N, K, 2)`` reference points.
        mask: ``(N, K)`` boolean, True for the points that count.
        scale: None, or per-face ``(N,)`` factors applied to the errors (for
            errors in original-image pixels: original face box size / crop size).
        sample_weight: None, or per-face ``(N,)`` weights.

    Returns:
        ``(totals, counts)``, both ``(K,)``: the (weighted) sum of errors and
        the (weighted) number of faces for each point.
    """
    errors = point_errors(predicted, target, mask)
    if scale is not None:
        errors = errors * ops.reshape(ops.cast(scale, errors.dtype), (-1, 1))
    weights = ops.cast(mask, errors.dtype)
    if sample_weight is not None:
        weights = weights * ops.reshape(ops.cast(sample_weight, errors.dtype), (-1, 1))
    return ops.sum(errors * weights, axis=0), ops.sum(weights, axis=0)


def region_mean(totals, counts, indices):
    """TAO's region error: the mean over the region's points of each point's mean error.

    Points that no face has counted are left out; a region with no counted
    point gives NaN.

    Args:
        totals: ``(K,)`` summed errors per point (:func:`point_error_totals`).
        counts: ``(K,)`` counts per point.
        indices: the region's point indices.

    Returns:
        A scalar.
    """
    indices = np.asarray(indices, dtype="int32")
    region_totals = ops.take(totals, indices)
    region_counts = ops.take(counts, indices)
    counted = region_counts > 0
    point_means = ops.where(counted, region_totals / ops.maximum(region_counts, 1e-12), 0)
    num_counted = ops.sum(ops.cast(counted, totals.dtype))
    mean = ops.sum(point_means) / ops.maximum(num_counted, 1)
    return ops.where(num_counted > 0, mean, np.nan)


# ---------------------------------------------------------------------------
# NumPy functions for evaluation
# ---------------------------------------------------------------------------


def _numpy_inputs(predicted, target, visibility):
    predicted = np.asarray(predicted, dtype="float64")
    target = np.asarray(target, dtype="float64")
    if predicted.ndim != 3 or predicted.shape[-1] != 2:
        raise ValueError(
            "Predictions must have shape (N, K, 2). "
            f"Received: pred.shape={predicted.shape}"
        )
    if target.ndim != 3 or target.shape[-1] not in (2, 3) or target.shape[:2] != predicted.shape[:2]:
        raise ValueError(
            f"Ground truth must have shape (N, K, 2) or (N, K, 3) matching the predictions "
            f"{predicted.shape}. Received: gt.shape={target.shape}"
        )
    if visibility is None:
        visible = target[..., 2] > 0 if target.shape[-1] == 3 else np.ones(target.shape[:2], bool)
    else:
        visible = np.asarray(visibility)
        if visible.shape != target.shape[:2]:
            raise ValueError(
                f"Visibility must have shape (N, K) = {target.shape[:2]}. "
                f"Received: visibility.shape={visible.shape}"
            )
        visible = visible > 0
    return predicted, target[..., :2], visible


def nme(pred, gt, visibility=None, normalization="inter_ocular", scheme=None):
    """Per-face normalised mean error, for evaluation.

    See :func:`per_face_nme` for the definition and the NaN cases.

    Args:
        pred: ``(N, K, 2)`` predicted points.
        gt: ``(N, K, 2)`` ground truth, or ``(N, K, 3)`` with visibility last.
        visibility: optional ``(N, K)`` flags (> 0 = visible); defaults to the
            third column of ``gt`` when present, else all visible.
        normalization: ``"inter_ocular"``, ``"eye_centres"``, ``"inter_pupil"``,
            ``"box_diagonal"`` or ``"box_area"``.
        scheme: scheme name or ``KeypointScheme``; None picks it by keypoint count
            (only the eye-based normalisations need one).

    Returns:
        ``(N,)`` float64 array.
    """
    predicted, target, visible = _numpy_inputs(pred, gt, visibility)
    values = per_face_nme(
        ops.convert_to_tensor(predicted), ops.convert_to_tensor(target),
        ops.convert_to_tensor(visible), normalization, scheme,
    )
    return np.asarray(ops.convert_to_numpy(values), dtype="float64")


def region_pixel_error(pred, gt, visibility=None, scheme=None, scale=None,
                       include_occluded=False, regions=None):
    """TAO's region keypoint pixel error (FPENet's KPI).

    For each point, the mean Euclidean error over the faces where it counts;
    for each region, the mean of its points' errors (as TAO's FPENet evaluator
    computes it, except that a point no face counts is left out rather than
    counted as 0).

    Args:
        pred: ``(N, K, 2)`` predicted points.
        gt: ``(N, K, 2)`` or ``(N, K, 3)`` ground truth.
        visibility: optional ``(N, K)`` flags (see :func:`nme`).
        scheme: scheme name or ``KeypointScheme`` whose regions are reported;
            None picks it by keypoint count, and reports only ``"all"`` when the
            count matches no scheme.
        scale: None (errors in the label's pixels), a number, or ``(N,)``
            per-face factors: original face box size / crop size gives errors
            in original-image pixels, as TAO reports them.
        include_occluded: False counts only visible points (TAO's
            ``non_occ`` column); True also counts occluded points that have
            labelled coordinates (TAO's ``all`` column). Unlabelled (NaN)
            points never count.
        regions: optional ``{name: indices}`` overriding the scheme's regions;
            :func:`tao_regions` gives TAO's grouping (its "Mouth" is mouth +
            inner_lips).

    Returns:
        ``{"all": error, <region>: error, ...}`` as floats (NaN for a region
        with no counted point).
    """
    predicted, target, visible = _numpy_inputs(pred, gt, visibility)
    mask = np.all(np.isfinite(target), axis=-1) if include_occluded else visible
    if scale is not None:
        scale = np.broadcast_to(np.asarray(scale, dtype="float64"), predicted.shape[:1])
    totals, counts = point_error_totals(
        ops.convert_to_tensor(predicted), ops.convert_to_tensor(target),
        ops.convert_to_tensor(mask), None if scale is None else ops.convert_to_tensor(scale),
    )
    if regions is None:
        regions = _default_regions(scheme, predicted.shape[1])
    return {
        name: float(ops.convert_to_numpy(region_mean(totals, counts, indices)))
        for name, indices in regions.items()
    }


# Regions of TAO FPENet's evaluator (``Eyes``, ``Mouth`` = outer + inner lips, ...)
# in terms of the scheme's regions.
TAO_REGION_GROUPS = {
    "chin": ("chin",),
    "eyebrows": ("eyebrows",),
    "nose": ("nose",),
    "eyes": ("eyes", "extra_eyes"),
    "mouth": ("mouth", "inner_lips"),
    "pupils": ("pupils",),
    "ears": ("ears",),
}


def tao_regions(scheme):
    """The regions of TAO FPENet's KPI report for a scheme, for :func:`region_pixel_error`.

    TAO reports "Mouth" over the outer and inner lips together (points 48-67 of
    the 68/80-point layouts); the other regions are the scheme's own.

    Args:
        scheme: scheme name or ``KeypointScheme``.

    Returns:
        ``{"all": indices, "chin": indices, ...}`` for the groups the scheme has.
    """
    resolved = schemes.get_scheme(scheme)
    regions = {"all": tuple(range(resolved.num_keypoints))}
    for group, members in TAO_REGION_GROUPS.items():
        indices = sum((tuple(resolved.regions.get(member, ())) for member in members), ())
        if indices:
            regions[group] = indices
    return regions


def _default_regions(scheme, num_keypoints):
    if scheme is None and num_keypoints not in _known_counts():
        return {"all": range(num_keypoints)}
    resolved = resolve_scheme(scheme, num_keypoints)
    return {"all": range(num_keypoints), **resolved.regions}


def _known_counts():
    return {scheme.num_keypoints for scheme in schemes.SCHEMES.values()}


def _checked_errors(per_face_errors):
    errors = np.asarray(per_face_errors, dtype="float64").reshape(-1)
    if errors.size == 0:
        raise ValueError("per_face_errors is empty. Received: per_face_errors=[]")
    if np.isnan(errors).any():
        raise ValueError(
            "per_face_errors contains NaN (faces with no visible point or an undefined "
            "normaliser): drop them with errors[~np.isnan(errors)], or count them as "
            "failures with np.nan_to_num(errors, nan=np.inf). "
            f"Received: per_face_errors with {int(np.isnan(errors).sum())} NaN of {errors.size}"
        )
    if (errors < 0).any():
        raise ValueError(
            f"per_face_errors must be non-negative. Received: min={errors.min()}"
        )
    return errors


def _checked_threshold(threshold):
    if not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a positive number. Received: threshold={threshold}")
    return float(threshold)


def auc_and_failure_rate(per_face_errors, threshold):
    """Area under the CED curve up to ``threshold``, and the failure rate.

    The AUC is the exact area under the cumulative error distribution on
    ``[0, threshold]`` divided by ``threshold`` (so 1 means every error is 0):
    ``AUC = mean_n max(0, 1 - e_n / threshold)``; sampled-curve implementations
    (e.g. the 300W and WFLW evaluation scripts) approximate the same integral.
    The failure rate is the fraction of faces with an error above
    ``threshold`` (MTFL / WFLW convention, e.g. NME > 0.1). ``inf`` errors (a
    missed face) count as failures.

    Args:
        per_face_errors: ``(N,)`` non-negative errors, no NaN.
        threshold: positive cut-off, in the units of the errors.

    Returns:
        ``(auc, failure_rate)`` as floats.
    """
    errors = _checked_errors(per_face_errors)
    threshold = _checked_threshold(threshold)
    auc = float(np.mean(np.clip(1.0 - errors / threshold, 0.0, 1.0)))
    failure_rate = float(np.mean(errors > threshold))
    return auc, failure_rate


def ced_curve(per_face_errors, threshold, num_points=1001):
    """Cumulative error distribution: fraction of faces with error <= t.

    Args:
        per_face_errors: ``(N,)`` non-negative errors, no NaN.
        threshold: the largest error on the curve.
        num_points: number of evenly spaced thresholds in ``[0, threshold]``.

    Returns:
        ``(thresholds, fractions)``, two ``(num_points,)`` arrays for plotting.
    """
    errors = np.sort(_checked_errors(per_face_errors))
    threshold = _checked_threshold(threshold)
    if int(num_points) < 2:
        raise ValueError(f"num_points must be at least 2. Received: num_points={num_points}")
    thresholds = np.linspace(0.0, threshold, int(num_points))
    fractions = np.searchsorted(errors, thresholds, side="right") / errors.size
    return thresholds, fractions


def yaw_binned_mean(per_face_errors, yaw_deg, edges=(30.0, 60.0)):
    """Mean error per |yaw| bin and the mean of the bin means (3DDFA protocol).

    With the default edges the bins are ``|yaw| <= 30``, ``30 < |yaw| <= 60``
    and ``|yaw| > 60``, as in Zhu et al., "Face Alignment Across Large Poses: A
    3D Solution" (CVPR 2016) on AFLW2000-3D. The balanced ``"mean"`` averages
    the bin means, not the faces.

    Args:
        per_face_errors: ``(N,)`` per-face errors (e.g. :func:`nme` with
            ``"box_area"``), no NaN.
        yaw_deg: ``(N,)`` yaw angles in degrees (the sign is ignored).
        edges: increasing bin edges in degrees.

    Returns:
        ``{"bins": {label: {"mean": float, "count": int}}, "mean": float}`` with
        labels such as ``"0-30"``, ``"30-60"``, ``"60+"``. An empty bin has mean
        NaN and is left out of ``"mean"``.
    """
    errors = _checked_errors(per_face_errors)
    yaw = np.abs(np.asarray(yaw_deg, dtype="float64").reshape(-1))
    if yaw.shape != errors.shape:
        raise ValueError(
            f"yaw_deg must have one value per face ({errors.size}). "
            f"Received: yaw_deg.shape={np.shape(yaw_deg)}"
        )
    edges = [float(edge) for edge in edges]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] <= 0:
        raise ValueError(f"edges must be positive and increasing. Received: edges={edges}")
    lows = [0.0] + edges
    highs = edges + [np.inf]
    bins = {}
    for low, high in zip(lows, highs):
        in_bin = (yaw > low) & (yaw <= high) if low > 0 else yaw <= high
        label = f"{low:g}-{high:g}" if np.isfinite(high) else f"{low:g}+"
        count = int(in_bin.sum())
        bins[label] = {"mean": float(errors[in_bin].mean()) if count else float("nan"), "count": count}
    bin_means = [value["mean"] for value in bins.values() if value["count"]]
    return {"bins": bins, "mean": float(np.mean(bin_means))}


# ---------------------------------------------------------------------------
# Keras metrics for fit / evaluate
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="fpezoo")
class NME(keras.metrics.Metric):
    """Mean normalised error over faces, for ``model.fit`` / ``model.evaluate``.

    Computes :func:`per_face_nme` on each batch (the same implementation as
    :func:`nme`) and keeps a running mean over faces; faces with an undefined
    NME (no visible point) are left out. Reads ``0.0`` before any face counted.

    Args:
        normalization: ``"inter_ocular"``, ``"eye_centres"``, ``"inter_pupil"``,
            ``"box_diagonal"`` or ``"box_area"``.
        scheme: scheme name, or None to pick the scheme by keypoint count.
        name: metric name (default ``"nme"``).
        dtype: computation dtype (default float32; float16 predictions are cast).

    Example::

        model.compile("adam", loss=fpezoo.losses.WingLoss(),
                      metrics=[fpezoo.metrics.NME("inter_ocular", scheme="ibug68")])
    """

    def __init__(self, normalization="inter_ocular", scheme=None, name="nme", dtype=None):
        _check_normalization(normalization)
        super().__init__(name=name, dtype=dtype)
        self.normalization = normalization
        self.scheme = scheme_name(scheme)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, self.dtype)
        y_pred = ops.cast(y_pred, self.dtype)
        target, visible = split_labels(y_true)
        values = per_face_nme(y_pred, target, visible, self.normalization, self.scheme)
        valid = ops.logical_not(ops.isnan(values))
        weights = ops.cast(valid, self.dtype)
        if sample_weight is not None:
            weights = weights * ops.reshape(ops.cast(sample_weight, self.dtype), (-1,))
        self.total.assign_add(ops.sum(ops.where(valid, values, 0) * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def get_config(self):
        return {**super().get_config(), "normalization": self.normalization, "scheme": self.scheme}


@keras.saving.register_keras_serializable(package="fpezoo")
class RegionPixelError(keras.metrics.Metric):
    """TAO's region keypoint pixel error, accumulated over batches in ``fit``.

    Same computation as :func:`region_pixel_error` (per-point mean error over
    the faces, then the mean over the region's points), in model-input pixels.

    Args:
        scheme: scheme name (required: it fixes K and the regions).
        region: ``"all"`` or a region of the scheme (``"eyes"``, ``"mouth"``...).
        include_occluded: also count occluded points with finite labels.
        name: metric name (default ``"<region>_pixel_error"``).
        dtype: computation dtype (default float32).
    """

    def __init__(self, scheme, region="all", include_occluded=False, name=None, dtype=None):
        resolved = schemes.get_scheme(scheme)
        if region != "all" and region not in resolved.regions:
            raise ValueError(
                f"Scheme '{resolved.name}' has no region {region!r}; its regions are "
                f"'all', {', '.join(map(repr, resolved.regions))}. Received: region={region!r}"
            )
        super().__init__(name=name or f"{region}_pixel_error", dtype=dtype)
        self.scheme = resolved.name
        self.region = region
        self.include_occluded = bool(include_occluded)
        num_keypoints = resolved.num_keypoints
        self._indices = tuple(range(num_keypoints)) if region == "all" else tuple(resolved.regions[region])
        self.totals = self.add_variable(shape=(num_keypoints,), initializer="zeros", name="totals")
        self.counts = self.add_variable(shape=(num_keypoints,), initializer="zeros", name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, self.dtype)
        y_pred = ops.cast(y_pred, self.dtype)
        target, visible = split_labels(y_true)
        if self.include_occluded:
            mask = ops.all(ops.isfinite(target), axis=-1)
        else:
            mask = visible
        totals, counts = point_error_totals(y_pred, target, mask, sample_weight=sample_weight)
        self.totals.assign_add(totals)
        self.counts.assign_add(counts)

    def result(self):
        return region_mean(self.totals, self.counts, self._indices)

    def get_config(self):
        return {
            **super().get_config(),
            "scheme": self.scheme,
            "region": self.region,
            "include_occluded": self.include_occluded,
        }
