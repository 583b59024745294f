"""Keypoint schemes as data: point names, regions, flips and conversions.

A :class:`KeypointScheme` describes one landmark layout: the name of each point,
the face regions it belongs to, the permutation a horizontal flip applies, and
the points that normalise errors. Six schemes are defined:

* ``"ibug68"``: the iBUG / 300-W 68-point layout (Sagonas et al., "300 Faces
  in-the-Wild Challenge", ICCV-W 2013).
* ``"tao80"``: TAO FPENet's 80 points: the 68 iBUG points, 8 pupil points and
  4 ear points.
* ``"tao104"``: TAO FPENet's 104 points: the 80 points and 24 extra eye points.
* ``"wflw98"``: WFLW's 98 points (Wu et al., "Look at Boundary", CVPR 2018).
* ``"five_point"``: eye centres, nose tip and mouth corners, as MTFL
  (Zhang et al., "Facial Landmark Detection by Deep Multi-task Learning",
  ECCV 2014) and OpenVINO's landmarks-regression-retail-0009.
* ``"aflw21"``: AFLW's 21 points (Koestinger et al., "Annotated Facial
  Landmarks in the Wild", ICCV-W 2011).

Throughout, "left" and "right" are the *image* left and right (as in MTFL and
AFLW), not the subject's: ``left_eye_outer_corner`` is the eye corner nearest
the image's left edge of a frontal face.

Conversions (:func:`convert_keypoints`) go through the iBUG-68 points the
schemes share, plus direct tables where a target point is better defined from
the source (e.g. AFLW's own eye centres for the 5-point scheme). Points without
a counterpart come out NaN with visibility 0, which is what lets, for example, a
21-point label supervise part of a 68-point model.
"""

import dataclasses
import types

import numpy as np

# Groups of regions that carry one weight in TAO FPENet's loss
# (``nvidia_tao_tf1/cv/fpenet/losses/fpenet_loss.py`` weights 'face', 'eyes',
# 'mouth'; the model card adds 'pupil').
WEIGHT_GROUPS = {
    "eyes": ("eyes", "extra_eyes"),
    "mouth": ("mouth", "inner_lips"),
    "pupil": ("pupils",),
}
WEIGHT_GROUP_NAMES = ("face", "eyes", "mouth", "pupil")
REGION_NAMES = (
    "chin", "eyebrows", "nose", "eyes", "mouth", "inner_lips", "pupils", "ears", "extra_eyes",
)


@dataclasses.dataclass(frozen=True)
class KeypointScheme:
    """One keypoint layout.

    Attributes:
        name: the scheme's name, a key of :data:`SCHEMES`.
        point_names: one name per point ("left"/"right" = image side).
        regions: mapping from region names (among :data:`REGION_NAMES`) to the
            tuple of point indices in that region.
        flip_permutation: ``flip_permutation[i]`` is the index of the point that
            lands on point ``i`` after a horizontal flip.
        outer_eye_corners: ``(image-left, image-right)`` indices of the outer eye
            corners (the inter-ocular distance), or None.
        eye_centres: ``(group_left, group_right)`` index tuples whose means are
            the eye centres, or None.
        pupils: ``(group_left, group_right)`` index tuples whose means are the
            pupil centres, or None.
    """

    name: str
    point_names: tuple
    regions: dict
    flip_permutation: tuple
    outer_eye_corners: tuple = None
    eye_centres: tuple = None
    pupils: tuple = None

    def __post_init__(self):
        num_keypoints = len(self.point_names)
        object.__setattr__(self, "point_names", tuple(self.point_names))
        object.__setattr__(self, "flip_permutation", tuple(int(i) for i in self.flip_permutation))
        object.__setattr__(
            self,
            "regions",
            types.MappingProxyType({key: tuple(value) for key, value in self.regions.items()}),
        )
        if sorted(self.flip_permutation) != list(range(num_keypoints)):
            raise ValueError(
                f"The flip permutation of scheme '{self.name}' must be a permutation of "
                f"range({num_keypoints}). Received: flip_permutation={self.flip_permutation}"
            )
        unknown = set(self.regions) - set(REGION_NAMES)
        if unknown:
            raise ValueError(
                f"Unknown region names in scheme '{self.name}'; expected names among "
                f"{REGION_NAMES}. Received: regions={sorted(unknown)}"
            )
        for region, indices in self.regions.items():
            if any(not 0 <= index < num_keypoints for index in indices):
                raise ValueError(
                    f"Region '{region}' of scheme '{self.name}' has indices outside "
                    f"range({num_keypoints}). Received: indices={indices}"
                )

    def __hash__(self):
        return hash((self.name, self.point_names))

    def __reduce__(self):
        # The read-only regions mapping does not pickle; rebuild from a dict.
        return (KeypointScheme, (self.name, self.point_names, dict(self.regions),
                                 self.flip_permutation, self.outer_eye_corners,
                                 self.eye_centres, self.pupils))

    @property
    def num_keypoints(self):
        """The number of points K."""
        return len(self.point_names)

    def region_of_point(self):
        """The region name of each point (None for points in no region)."""
        owner = [None] * self.num_keypoints
        for region, indices in self.regions.items():
            for index in indices:
                owner[index] = region
        return tuple(owner)

    def keypoint_weights(self, region_weights=None):
        """Per-point weights from TAO FPENet's region weights.

        TAO weighs the loss of four groups of points (``fpenet_loss.py``):
        ``"eyes"`` (the eye contours and the extra eye points), ``"mouth"`` (the
        outer and inner lips), ``"pupil"`` (the pupils) and ``"face"`` (every
        other point: chin, eyebrows, nose, ears).

        Args:
            region_weights: mapping from some of ``"face"``, ``"eyes"``,
                ``"mouth"``, ``"pupil"`` to non-negative weights; missing keys
                weigh 1. None gives every point weight 1.

        Returns:
            float32 array of shape ``(K,)``.

        Raises:
            ValueError: on an unknown group name or a negative weight.
        """
        region_weights = dict(region_weights or {})
        unknown = set(region_weights) - set(WEIGHT_GROUP_NAMES)
        if unknown:
            raise ValueError(
                f"Unknown region weight names; expected names among {WEIGHT_GROUP_NAMES}. "
                f"Received: region_weights={region_weights}"
            )
        if any(not np.isfinite(w) or w < 0 for w in region_weights.values()):
            raise ValueError(
                "Region weights must be finite and non-negative. "
                f"Received: region_weights={region_weights}"
            )
        weights = np.full(self.num_keypoints, region_weights.get("face", 1.0), dtype="float32")
        for group, regions in WEIGHT_GROUPS.items():
            for region in regions:
                weights[list(self.regions.get(region, ()))] = region_weights.get(group, 1.0)
        return weights


def _span(start, stop):
    return tuple(range(start, stop))


def _mirror_names(prefix, count):
    return tuple(f"{prefix}_{i}" for i in range(count))


# --------------------------------------------------------------------------- iBUG-68
# Point order of the iBUG 300-W annotation (https://ibug.doc.ic.ac.uk/resources/300-W/),
# 0-based. Each contour runs from the image left to the image right, and each eye
# and lip contour runs clockwise in the image from its left corner.
_IBUG68_NAMES = (
    _mirror_names("jaw", 17)                                          # 0-16
    + _mirror_names("left_brow", 5) + _mirror_names("right_brow", 5)  # 17-26, left to right
    + _mirror_names("nose_bridge", 4)                                 # 27-30, top to tip
    + _mirror_names("nose_base", 5)                                   # 31-35, left to right
    + ("left_eye_outer_corner", "left_eye_upper_outer", "left_eye_upper_inner",
       "left_eye_inner_corner", "left_eye_lower_inner", "left_eye_lower_outer")   # 36-41
    + ("right_eye_inner_corner", "right_eye_upper_inner", "right_eye_upper_outer",
       "right_eye_outer_corner", "right_eye_lower_outer", "right_eye_lower_inner")  # 42-47
    + ("mouth_left_corner",) + _mirror_names("upper_lip_outer", 5)    # 48-53
    + ("mouth_right_corner",) + _mirror_names("lower_lip_outer", 5)   # 54-59, right to left
    + ("inner_mouth_left_corner",) + _mirror_names("upper_lip_inner", 3)   # 60-63
    + ("inner_mouth_right_corner",) + _mirror_names("lower_lip_inner", 3)  # 64-67
)
# TAO FPENet's flip mapping for 68 points (``_get_flip_landmark_mapping`` in
# ``nvidia_tao_tf1/cv/fpenet/dataloader/fpenet_dataloader.py``), the standard
# iBUG mirror pairs.
_IBUG68_FLIP = (
    _span(0, 17)[::-1] + _span(17, 27)[::-1]
    + _span(27, 31) + _span(31, 36)[::-1]
    + (45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40)
    + _span(48, 55)[::-1] + _span(55, 60)[::-1] + _span(60, 65)[::-1] + _span(65, 68)[::-1]
)
# The regions of the TAO FPENet model card (1-based there: chin 1-17, eyebrows
# 18-27, nose 28-36, eyes 37-48, mouth 49-61, inner lips 62-68). The card counts
# the inner-lip corner 60 (0-based) in the mouth; here it is in the inner lips,
# as in the iBUG annotation (outer lip 48-59, inner lip 60-67). TAO's loss and
# region error treat 48-67 as one mouth group, so the weights do not change.
_IBUG68_REGIONS = {
    "chin": _span(0, 17),
    "eyebrows": _span(17, 27),
    "nose": _span(27, 36),
    "eyes": _span(36, 48),
    "mouth": _span(48, 60),
    "inner_lips": _span(60, 68),
}
_IBUG68_EYES = (_span(36, 42), _span(42, 48))

IBUG68 = KeypointScheme(
    name="ibug68",
    point_names=_IBUG68_NAMES,
    regions=_IBUG68_REGIONS,
    flip_permutation=_IBUG68_FLIP,
    outer_eye_corners=(36, 45),
    eye_centres=_IBUG68_EYES,
)

# --------------------------------------------------------------------------- TAO-80/104
# TAO FPENet's 80 and 104 points: the model card lists Pupil 69-76, Ears 77-80 and
# additional eye landmarks 81-104 (1-based); the flip mapping below is TAO's own
# (``pupil_ind_flip``, ``ear_ind_flip``, ``extra_ind_flip`` in
# ``fpenet_dataloader.py``). It pairs pupil points 68-71 with 72-75 (0<->2 of the
# other group, 1 and 3 in place: four iris points per eye), ears 76<->78 and
# 77<->79, extra eye points 80-90 with 91-101 and 102 with 103. TAO's public
# material does not say which group is on which side; as the 68 points list the
# image-left eye first, the first group of each pair is named "left" here.
_TAO_PUPIL_FLIP = (74, 73, 72, 75, 70, 69, 68, 71)
_TAO_EAR_FLIP = (78, 79, 76, 77)
_TAO_EXTRA_EYE_FLIP = (
    (91, 92, 93) + _span(94, 101)[::-1] + (101, 80, 81, 82) + _span(83, 90)[::-1] + (90, 103, 102)
)
_TAO80_NAMES = (
    _IBUG68_NAMES
    + _mirror_names("left_pupil", 4) + _mirror_names("right_pupil", 4)  # 68-75
    + _mirror_names("left_ear", 2) + _mirror_names("right_ear", 2)      # 76-79
)
_TAO_PUPILS = (_span(68, 72), _span(72, 76))

TAO80 = KeypointScheme(
    name="tao80",
    point_names=_TAO80_NAMES,
    regions={**_IBUG68_REGIONS, "pupils": _span(68, 76), "ears": _span(76, 80)},
    flip_permutation=_IBUG68_FLIP + _TAO_PUPIL_FLIP + _TAO_EAR_FLIP,
    outer_eye_corners=(36, 45),
    eye_centres=_IBUG68_EYES,
    pupils=_TAO_PUPILS,
)

TAO104 = KeypointScheme(
    name="tao104",
    point_names=(
        _TAO80_NAMES
        + _mirror_names("left_eye_extra", 11) + _mirror_names("right_eye_extra", 11)  # 80-101
        + ("left_eye_extra_11", "right_eye_extra_11")                                 # 102-103
    ),
    regions={
        **_IBUG68_REGIONS, "pupils": _span(68, 76), "ears": _span(76, 80),
        "extra_eyes": _span(80, 104),
    },
    flip_permutation=_IBUG68_FLIP + _TAO_PUPIL_FLIP + _TAO_EAR_FLIP + _TAO_EXTRA_EYE_FLIP,
    outer_eye_corners=(36, 45),
    eye_centres=_IBUG68_EYES,
    pupils=_TAO_PUPILS,
)

# --------------------------------------------------------------------------- WFLW-98
# WFLW's layout (https://wywu.github.io/projects/LAB/WFLW.html); mirror pairs as in
# mmpose's ``configs/_base_/datasets/wflw.py``: contour 0-32, brows 33-41 / 42-50
# (upper edge outer to inner, then lower edge), nose 51-59, eyes 60-67 / 68-75
# (corner, upper lid, corner, lower lid), outer lip 76-87, inner lip 88-95,
# pupils 96 and 97.
_WFLW98_NAMES = (
    _mirror_names("jaw", 33)
    + _mirror_names("left_brow", 9) + _mirror_names("right_brow", 9)
    + _mirror_names("nose_bridge", 4) + _mirror_names("nose_base", 5)
    + _mirror_names("left_eye", 8) + _mirror_names("right_eye", 8)
    + ("mouth_left_corner",) + _mirror_names("upper_lip_outer", 5)
    + ("mouth_right_corner",) + _mirror_names("lower_lip_outer", 5)
    + ("inner_mouth_left_corner",) + _mirror_names("upper_lip_inner", 3)
    + ("inner_mouth_right_corner",) + _mirror_names("lower_lip_inner", 3)
    + ("left_pupil", "right_pupil")
)
_WFLW98_FLIP = (
    _span(0, 33)[::-1]
    + (46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38)
    + (51, 52, 53, 54, 59, 58, 57, 56, 55)
    + (72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65)
    + (82, 81, 80, 79, 78, 77, 76, 87, 86, 85, 84, 83)
    + (92, 91, 90, 89, 88, 95, 94, 93)
    + (97, 96)
)

WFLW98 = KeypointScheme(
    name="wflw98",
    point_names=_WFLW98_NAMES,
    regions={
        "chin": _span(0, 33),
        "eyebrows": _span(33, 51),
        "nose": _span(51, 60),
        "eyes": _span(60, 76),
        "mouth": _span(76, 88),
        "inner_lips": _span(88, 96),
        "pupils": (96, 97),
    },
    flip_permutation=_WFLW98_FLIP,
    outer_eye_corners=(60, 72),
    eye_centres=(_span(60, 68), _span(68, 76)),
    pupils=((96,), (97,)),
)

# --------------------------------------------------------------------------- 5-point
FIVE_POINT = KeypointScheme(
    name="five_point",
    point_names=(
        "left_eye_centre", "right_eye_centre", "nose_tip", "mouth_left_corner",
        "mouth_right_corner",
    ),
    regions={"eyes": (0, 1), "nose": (2,), "mouth": (3, 4)},
    flip_permutation=(1, 0, 2, 4, 3),
    eye_centres=((0,), (1,)),
)

# --------------------------------------------------------------------------- AFLW-21
# AFLW's 21 points (order of ../shared/data/README.md, image left first).
AFLW21 = KeypointScheme(
    name="aflw21",
    point_names=(
        "left_brow_left", "left_brow_centre", "left_brow_right",
        "right_brow_left", "right_brow_centre", "right_brow_right",
        "left_eye_left_corner", "left_eye_centre", "left_eye_right_corner",
        "right_eye_left_corner", "right_eye_centre", "right_eye_right_corner",
        "left_ear", "nose_left", "nose_tip", "nose_right", "right_ear",
        "mouth_left_corner", "mouth_centre", "mouth_right_corner", "chin",
    ),
    regions={
        "eyebrows": _span(0, 6), "eyes": _span(6, 12), "ears": (12, 16),
        "nose": (13, 14, 15), "mouth": (17, 18, 19), "chin": (20,),
    },
    flip_permutation=(5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20),
    outer_eye_corners=(6, 11),
    eye_centres=((7,), (10,)),
)

SCHEMES = {
    scheme.name: scheme for scheme in (IBUG68, TAO80, TAO104, WFLW98, FIVE_POINT, AFLW21)
}


def get_scheme(name_or_scheme):
    """The :class:`KeypointScheme` for a name (or the scheme itself).

    Args:
        name_or_scheme: a key of :data:`SCHEMES` or a ``KeypointScheme``.

    Returns:
        The scheme.

    Raises:
        ValueError: for an unknown name.
        TypeError: for anything else than a string or a scheme.
    """
    if isinstance(name_or_scheme, KeypointScheme):
        return name_or_scheme
    if not isinstance(name_or_scheme, str):
        raise TypeError(
            "A keypoint scheme must be a scheme name or a KeypointScheme. "
            f"Received: scheme={name_or_scheme!r}"
        )
    try:
        return SCHEMES[name_or_scheme]
    except KeyError:
        raise ValueError(
            f"Unknown keypoint scheme; known schemes are {sorted(SCHEMES)}. "
            f"Received: scheme={name_or_scheme!r}"
        ) from None


def scheme_for_num_keypoints(num_keypoints):
    """The scheme with ``num_keypoints`` points (68, 80, 104, 98, 5 or 21).

    Raises:
        ValueError: when no scheme has that many points.
    """
    for scheme in SCHEMES.values():
        if scheme.num_keypoints == num_keypoints:
            return scheme
    known = sorted(scheme.num_keypoints for scheme in SCHEMES.values())
    raise ValueError(
        f"No keypoint scheme has this many points; known counts are {known}. "
        f"Received: num_keypoints={num_keypoints!r}"
    )


def _check_keypoints(keypoints, visibility, scheme):
    keypoints = np.asarray(keypoints, dtype="float32")
    if keypoints.ndim < 2 or keypoints.shape[-1] != 2:
        raise ValueError(
            "Keypoints must have shape (..., K, 2). "
            f"Received: keypoints.shape={keypoints.shape}"
        )
    if keypoints.shape[-2] != scheme.num_keypoints:
        raise ValueError(
            f"Scheme '{scheme.name}' has {scheme.num_keypoints} points but the keypoints "
            f"have {keypoints.shape[-2]}. Received: keypoints.shape={keypoints.shape}"
        )
    if visibility is None:
        return keypoints, None
    visibility = np.asarray(visibility, dtype="float32")
    if visibility.shape != keypoints.shape[:-1]:
        raise ValueError(
            f"Visibility must have shape {keypoints.shape[:-1]} to match the keypoints. "
            f"Received: visibility.shape={visibility.shape}"
        )
    return keypoints, visibility


def flip_keypoints(keypoints, visibility, scheme, image_width):
    """Keypoints of the horizontally flipped image.

    Each ``x`` becomes ``image_width - 1 - x`` (pixel-centre convention), then
    the points are permuted so that each index names the same facial feature
    again (the image-left eye corner of the flipped face is the former
    image-right one).

    Args:
        keypoints: ``(..., K, 2)`` pixel coordinates.
        visibility: ``(..., K)`` visibility, or None.
        scheme: scheme name or :class:`KeypointScheme` with K points.
        image_width: width of the image in pixels.

    Returns:
        ``(keypoints, visibility)`` of the flipped image (visibility None when
        given None), float32.
    """
    scheme = get_scheme(scheme)
    keypoints, visibility = _check_keypoints(keypoints, visibility, scheme)
    if not image_width > 0:
        raise ValueError(f"The image width must be positive. Received: image_width={image_width}")
    mirrored = keypoints.copy()
    mirrored[..., 0] = image_width - 1 - mirrored[..., 0]
    permutation = np.asarray(scheme.flip_permutation)
    mirrored = mirrored[..., permutation, :]
    if visibility is not None:
        visibility = visibility[..., permutation]
    return mirrored, visibility


def flip_averaged_predictions(run, crops, scheme):
    """Test-time flip averaging: predictions on crops and on their mirror images.

    The mirrored crops' keypoints are flipped back (:func:`flip_keypoints`) and
    averaged with the direct ones, as are the confidences (permuted alike).

    Args:
        run: a callable ``crops -> (keypoints (N, K, 2), confidence (N, K))``
            in crop pixels, e.g. a Keras model's ``predict_on_batch``; keypoints
            ``(N, K, 3)`` with depth are averaged too (depth renamed with the points).
        crops: ``(N, H, W, C)`` model-input crops.
        scheme: the model's scheme name or :class:`KeypointScheme` with K points.

    Returns:
        ``(keypoints, confidence)`` averaged over the two views.
    """
    scheme = get_scheme(scheme)
    crops = np.asarray(crops)
    points, scores = (np.asarray(array) for array in run(crops))
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    flipped_points, flipped_scores = (np.asarray(array) for array in run(mirrored))
    order = np.asarray(scheme.flip_permutation)
    unflipped, _ = flip_keypoints(flipped_points[..., :2], None, scheme, crops.shape[2])
    # Further columns (a 3D model's depth) are renamed alike; mirroring keeps depth.
    unflipped = np.concatenate([unflipped, flipped_points[:, order, 2:]], axis=-1)
    return (points + unflipped) / 2.0, (scores + flipped_scores[:, order]) / 2.0


# --------------------------------------------------------------------------- conversions
# Each scheme's points that are the same feature as one iBUG-68 point:
# {scheme: {ibug68 index: scheme index}}.
_SAME_AS_IBUG68 = {
    "tao80": {i: i for i in range(68)},
    "tao104": {i: i for i in range(68)},
    # The usual WFLW -> 68 correspondence: every second contour point, the upper
    # brow edges, the whole nose and mouth, and six of the eight points of each eye.
    "wflw98": {
        **{i: 2 * i for i in range(17)},
        **dict(zip(range(17, 22), range(33, 38))),
        **dict(zip(range(22, 27), range(42, 47))),
        **dict(zip(range(27, 36), range(51, 60))),
        **dict(zip(range(36, 42), (60, 61, 63, 64, 65, 67))),
        **dict(zip(range(42, 48), (68, 69, 71, 72, 73, 75))),
        **dict(zip(range(48, 68), range(76, 96))),
    },
    # AFLW brow ends and centres, eye corners, nostrils, nose tip, mouth corners and
    # chin. Checked on AFLW2000-3D, where the same faces carry AFLW's points and a
    # 68-point re-annotation: for |yaw| < 30 each AFLW point's nearest iBUG point is
    # the one listed, at a median distance of 0.03-0.08 of the outer-eye-corner
    # distance (annotation conventions differ by that much). AFLW's eye centres,
    # ears and mouth centre have no iBUG counterpart.
    "aflw21": {
        17: 0, 19: 1, 21: 2, 22: 3, 24: 4, 26: 5, 36: 6, 39: 8, 42: 9, 45: 11,
        31: 13, 30: 14, 35: 15, 48: 17, 54: 19, 8: 20,
    },
}

# Target points defined as the mean of several source points:
# {(source, target): ((source indices of target point 0), ...)}; () = no counterpart.
_DIRECT_CONVERSIONS = {
    ("ibug68", "five_point"): (_span(36, 42), _span(42, 48), (30,), (48,), (54,)),
    ("aflw21", "five_point"): ((7,), (10,), (14,), (17,), (19,)),
}


def _conversion_table(source, target):
    """``{target index: {source index: weight}}`` for the points that correspond."""
    if source.name == target.name:
        return {i: {i: 1.0} for i in range(source.num_keypoints)}
    direct = _DIRECT_CONVERSIONS.get((source.name, target.name))
    if direct is not None:
        return {t: {s: 1.0 / len(group) for s in group} for t, group in enumerate(direct) if group}
    # Through iBUG-68: source -> ibug68, then ibug68 -> target.
    to_ibug = (
        _conversion_table(source, IBUG68) if source.name == "ibug68"
        else {i: {s: 1.0} for i, s in _SAME_AS_IBUG68.get(source.name, {}).items()}
    )
    if target.name == "ibug68":
        return to_ibug
    from_ibug = _DIRECT_CONVERSIONS.get(("ibug68", target.name))
    if from_ibug is not None:
        from_ibug = {t: dict.fromkeys(group, 1.0 / len(group)) for t, group in enumerate(from_ibug)}
    else:
        from_ibug = {t: {i: 1.0} for i, t in _SAME_AS_IBUG68.get(target.name, {}).items()}
    table = {}
    for t, ibug_weights in from_ibug.items():
        if all(i in to_ibug for i in ibug_weights):
            combined = {}
            for i, weight in ibug_weights.items():
                for s, inner in to_ibug[i].items():
                    combined[s] = combined.get(s, 0.0) + weight * inner
            table[t] = combined
    return table


def convert_keypoints(keypoints, visibility, source, target):
    """Keypoints of one scheme expressed in another, where points correspond.

    A target point is a source point that marks the same feature (e.g. the
    AFLW-21 nose tip and iBUG point 30), or the mean of several (the 5-point
    eye centres are the means of the six iBUG points of each eye). Target
    points without a counterpart are NaN with visibility 0; a target point is
    visible only when every source point it comes from is visible and finite.

    Args:
        keypoints: ``(..., K_source, 2)`` coordinates.
        visibility: ``(..., K_source)`` visibility in {0, 1}, or None for all
            visible (NaN points still count as invisible).
        source: name or :class:`KeypointScheme` of the keypoints.
        target: name or :class:`KeypointScheme` to convert to.

    Returns:
        ``(keypoints, visibility)``: float32 arrays of shapes
        ``(..., K_target, 2)`` and ``(..., K_target)``.

    Raises:
        ValueError: on unknown schemes or keypoints that do not match ``source``.
    """
    source, target = get_scheme(source), get_scheme(target)
    keypoints, visibility = _check_keypoints(keypoints, visibility, source)
    if visibility is None:
        visibility = np.ones(keypoints.shape[:-1], dtype="float32")
    batch_shape = keypoints.shape[:-2]
    converted = np.full(batch_shape + (target.num_keypoints, 2), np.nan, dtype="float32")
    converted_visibility = np.zeros(batch_shape + (target.num_keypoints,), dtype="float32")
    for t, weights in _conversion_table(source, target).items():
        indices = np.asarray(list(weights))
        factors = np.asarray(list(weights.values()), dtype="float32")
        converted[..., t, :] = np.einsum("...ki,k->...i", keypoints[..., indices, :], factors)
        converted_visibility[..., t] = np.min(visibility[..., indices], axis=-1)
    finite = np.isfinite(converted).all(axis=-1)
    converted_visibility = np.where(finite, converted_visibility, 0.0).astype("float32")
    return converted, converted_visibility
