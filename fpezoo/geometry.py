"""Downstream geometry from landmarks: face alignment, head pose, eye aspect ratio.

* :func:`align_face` warps a face onto the 5-point template of face recognisers
  (ArcFace's 112x112 template) with the least-squares similarity transform of
  :func:`similarity_transform` (Umeyama 1991).
* :func:`head_pose` gives yaw, pitch and roll from 68 points with
  ``cv2.solvePnP`` and a generic 3D face (:data:`FACE_MODEL_3D`).
* :func:`eye_aspect_ratio` is the blink measure of Soukupova and Cech (2016).

Coordinates follow ``docs/DESIGN.md``: pixels, pixel-centre convention, x right,
y down. Keypoints of the 80-, 104- and 98-point schemes (and AFLW-21 for head
pose) are accepted too: they are converted to iBUG-68 with
:func:`fpezoo.schemes.convert_keypoints`.
"""

import typing

import cv2
import numpy as np

from fpezoo import schemes
from fpezoo.coordinates import rescale_points

# ArcFace's 5-point template for 112x112 face crops: image-left eye centre,
# image-right eye centre, nose tip, left and right mouth corners, in pixels
# (``arcface_dst`` of insightface's ``python-package/insightface/utils/face_align.py``;
# Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
# Recognition", CVPR 2019). The point order is that of the "five_point" scheme.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype="float32",
)

# The iBUG-68 points used for head pose: brow ends, eye corners, nostrils, mouth
# corners, lower lip centre and chin. They are TAO FPENet's "HP" region
# (``nvidia_tao_tf1/cv/fpenet/evaluation/fpenet_evaluator.py``), the points that
# are well defined in every pose.
HEAD_POSE_POINTS = (17, 21, 22, 26, 36, 39, 42, 45, 31, 35, 48, 54, 57, 8)

# A generic 3D face at those points, in the order of HEAD_POSE_POINTS: 14 of the
# 58 points of the anthropometric 3D face model published by ISR Coimbra
# (http://aifi.isr.uc.pt/Downloads/OpenGL/glAnthropometric3DModel.cpp, from
# P. Martins and J. Batista's model-based head pose work), as matched to iBUG
# points by github.com/lincolnhard/head-pose-estimation. The model has y up and
# z out of the face with image-left points at positive x; the values below are
# negated into the camera frame of OpenCV (x right, y down, z away from the
# camera), so a frontal face has the identity rotation. A unit is about a
# centimetre (the outer eye corners are 10.6 apart).
FACE_MODEL_3D = -np.array(
    [[6.825897, 6.760612, 4.402142],      # 17 left brow, outer end
     [1.330353, 7.122144, 6.903745],      # 21 left brow, inner end
     [-1.330353, 7.122144, 6.903745],     # 22 right brow, inner end
     [-6.825897, 6.760612, 4.402142],     # 26 right brow, outer end
     [5.311432, 5.485328, 3.987654],      # 36 left eye, outer corner
     [1.789930, 5.393625, 4.413414],      # 39 left eye, inner corner
     [-1.789930, 5.393625, 4.413414],     # 42 right eye, inner corner
     [-5.311432, 5.485328, 3.987654],     # 45 right eye, outer corner
     [2.005628, 1.409845, 6.165652],      # 31 nose base, left
     [-2.005628, 1.409845, 6.165652],     # 35 nose base, right
     [2.774015, -2.080775, 5.048531],     # 48 mouth, left corner
     [-2.774015, -2.080775, 5.048531],    # 54 mouth, right corner
     [0.000000, -3.116408, 6.097667],     # 57 lower lip, centre
     [0.000000, -7.415691, 4.070434]],    # 8 chin
    dtype="float64",
)
# solvePnP needs at least six points in general position for a 3D model.
_MIN_HEAD_POSE_POINTS = 6

# iBUG-68 points of each eye in the order p1..p6 of Soukupova and Cech: outer
# corner, two upper-lid points, inner corner, two lower-lid points (p2 above p6,
# p3 above p5).
_EYE_POINTS = ((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46))


def _as_points(keypoints, name, num_points=None):
    points = np.asarray(keypoints, dtype="float64")
    if points.ndim < 2 or points.shape[-1] != 2 or (
            num_points is not None and points.shape[-2] != num_points):
        expected = f"({num_points}, 2)" if num_points else "(..., K, 2)"
        raise ValueError(
            f"`{name}` must have shape {expected}. Received: {name}.shape={points.shape}"
        )
    return points


def _as_ibug68(keypoints, scheme):
    """The keypoints in the iBUG-68 scheme (NaN where a point has no counterpart)."""
    points = _as_points(keypoints, "keypoints")
    source = (schemes.get_scheme(scheme) if scheme is not None
              else schemes.scheme_for_num_keypoints(points.shape[-2]))
    converted, _ = schemes.convert_keypoints(points, None, source, "ibug68")
    return converted.astype("float64")


def similarity_transform(source_points, target_points):
    """The least-squares similarity transform mapping source points onto targets.

    Rotation, uniform scale and translation minimising the summed squared
    distance, in closed form (Umeyama, "Least-squares estimation of
    transformation parameters between two point patterns", IEEE TPAMI 1991).

    Args:
        source_points: ``(P, 2)`` points, P >= 2, not all equal.
        target_points: ``(P, 2)`` corresponding points.

    Returns:
        The ``(2, 3)`` float64 matrix ``M`` with ``target ~ M @ [x, y, 1]``.
    """
    source = _as_points(source_points, "source_points")
    target = _as_points(target_points, "target_points", num_points=source.shape[0])
    if source.ndim != 2 or not (np.isfinite(source).all() and np.isfinite(target).all()):
        raise ValueError(
            "A similarity transform needs (P, 2) finite points. "
            f"Received: source_points={source.tolist()}"
        )
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = np.mean(np.sum(source_centred**2, axis=1))
    if source_variance <= 1e-12:
        raise ValueError(
            "The source points coincide, so no transform is defined. "
            f"Received: source_points={source.tolist()}"
        )
    covariance = target_centred.T @ source_centred / len(source)
    u, singular_values, vt = np.linalg.svd(covariance)
    reflection = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ reflection @ vt
    scale = np.trace(np.diag(singular_values) @ reflection) / source_variance
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image, five_points, output_size=112):
    """Warps a face onto ArcFace's 5-point template.

    The template (:data:`ARCFACE_TEMPLATE_112`) is scaled to ``output_size``
    with :func:`fpezoo.coordinates.rescale_points`; the image is warped with the
    similarity transform of least squares from the five points to it
    (:func:`similarity_transform`), bilinear, black outside the image.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array (any dtype OpenCV warps).
        five_points: ``(5, 2)`` points in the "five_point" scheme order: image-left
            eye centre, image-right eye centre, nose tip, left and right mouth
            corners. Other schemes convert with
            ``fpezoo.schemes.convert_keypoints(points, None, scheme, "five_point")``.
        output_size: side of the square output in pixels.

    Returns:
        ``(aligned, matrix)``: the ``(output_size, output_size[, C])`` aligned
        face and the ``(2, 3)`` float64 matrix mapping image pixels to aligned
        pixels (apply it to other points with ``matrix @ [x, y, 1]``).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise ValueError(
            f"`image` must be an (H, W) or (H, W, C) array. Received: image.shape={image.shape}"
        )
    if isinstance(output_size, bool) or not isinstance(output_size, (int, np.integer)) \
            or output_size < 1:
        raise ValueError(
            f"`output_size` must be a positive integer. Received: output_size={output_size!r}"
        )
    points = _as_points(five_points, "five_points", num_points=5)
    template = rescale_points(ARCFACE_TEMPLATE_112.astype("float64"), (112, 112),
                              (output_size, output_size))
    matrix = similarity_transform(points, template)
    aligned = cv2.warpAffine(image, matrix, (int(output_size), int(output_size)),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return aligned, matrix


class HeadPose(typing.NamedTuple):
    """Head rotation in degrees (floats for one face, arrays for a batch).

    Attributes:
        yaw: rotation about the vertical axis; positive when the face turns
            toward the image left (the sign of AFLW2000-3D's ``yaw_deg``).
        pitch: rotation about the horizontal axis; positive when the face
            turns up.
        roll: in-plane rotation; positive when the head tilts clockwise in the
            image (the image-right eye lower than the image-left one).
    """

    yaw: typing.Any
    pitch: typing.Any
    roll: typing.Any


def rotation_from_angles(yaw, pitch, roll):
    """The face-to-camera rotation for angles in degrees (see :class:`HeadPose`).

    ``R = Rz(roll) @ Ry(yaw) @ Rx(-pitch)`` in OpenCV's camera frame (x right,
    y down, z away from the camera): the order of 3DDFA's pose parameters.
    """
    yaw, pitch, roll = np.radians([yaw, pitch, roll])
    cy, sy, cp, sp, cr, sr = (np.cos(yaw), np.sin(yaw), np.cos(-pitch), np.sin(-pitch),
                              np.cos(roll), np.sin(roll))
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return rz @ ry @ rx


def angles_from_rotation(rotation):
    """Inverse of :func:`rotation_from_angles`: ``HeadPose`` with yaw in [-90, 90]."""
    rotation = np.asarray(rotation, dtype="float64")
    yaw = np.arctan2(-rotation[2, 0], np.hypot(rotation[2, 1], rotation[2, 2]))
    pitch = -np.arctan2(rotation[2, 1], rotation[2, 2])
    roll = np.arctan2(rotation[1, 0], rotation[0, 0])
    return HeadPose(*(float(np.degrees(angle)) for angle in (yaw, pitch, roll)))


def camera_matrix(image_size, focal_length=None):
    """A pinhole camera for an image: principal point at the centre, no skew.

    Args:
        image_size: ``(height, width)`` in pixels.
        focal_length: focal length in pixels; None uses the image width (a
            horizontal field of view of about 53 degrees, a common lens).
    """
    height, width = image_size
    focal = float(width if focal_length is None else focal_length)
    return np.array([[focal, 0.0, (width - 1) / 2.0],
                     [0.0, focal, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def head_pose(keypoints, image_size, scheme=None, focal_length=None):
    """Yaw, pitch and roll of a face from its landmarks.

    Fits :data:`FACE_MODEL_3D` to the :data:`HEAD_POSE_POINTS` of the face with
    ``cv2.solvePnP`` (the SQPnP solver, a global optimum; Terzakis and Lourakis,
    ECCV 2020) under :func:`camera_matrix`, and reads the angles from the
    rotation (:func:`angles_from_rotation`).

    Args:
        keypoints: ``(K, 2)`` points of one face or ``(N, K, 2)`` of several, in
            pixels of the image; iBUG-68 or a scheme that converts to it (80,
            104, 98 points; AFLW-21 gives 13 of the 14 points). NaN points are
            left out.
        image_size: ``(height, width)`` of the image the points are in.
        scheme: scheme name of the keypoints; None picks it by point count.
        focal_length: focal length in pixels; None uses the image width.

    Returns:
        :class:`HeadPose` in degrees: floats for ``(K, 2)`` input, ``(N,)``
        arrays for ``(N, K, 2)`` (NaN for a face with fewer than 6 usable
        points).

    Raises:
        ValueError: on a bad shape or image size, or a single face with fewer
            than 6 usable points.
    """
    if len(image_size) != 2 or min(image_size) <= 0:
        raise ValueError(
            f"`image_size` must be (height, width) in pixels. Received: image_size={image_size}"
        )
    points68 = _as_ibug68(keypoints, scheme)
    camera = camera_matrix(image_size, focal_length)
    if points68.ndim == 2:
        return _solve_head_pose(points68, camera, strict=True)
    poses = [_solve_head_pose(face, camera, strict=False) for face in points68.reshape(-1, 68, 2)]
    batch_shape = points68.shape[:-2]
    return HeadPose(*(np.array(values, dtype="float64").reshape(batch_shape)
                      for values in zip(*poses)))


def _solve_head_pose(points68, camera, strict):
    image_points = points68[list(HEAD_POSE_POINTS)]
    usable = np.isfinite(image_points).all(axis=1)
    if usable.sum() < _MIN_HEAD_POSE_POINTS:
        if strict:
            raise ValueError(
                f"Head pose needs at least {_MIN_HEAD_POSE_POINTS} of the points "
                f"{HEAD_POSE_POINTS}. Received: usable points={usable.sum()}"
            )
        return HeadPose(np.nan, np.nan, np.nan)
    found, rotation_vector, _ = cv2.solvePnP(
        FACE_MODEL_3D[usable], image_points[usable], camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not found:
        if strict:
            raise ValueError("cv2.solvePnP found no pose for these points. "
                             f"Received: keypoints={points68.tolist()}")
        return HeadPose(np.nan, np.nan, np.nan)
    rotation, _ = cv2.Rodrigues(rotation_vector)
    return angles_from_rotation(rotation)


def eye_aspect_ratio(keypoints, scheme=None):
    """Eye aspect ratio (EAR) of each eye, the blink measure.

    ``EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)`` over the six iBUG points of
    an eye (Soukupova and Cech, "Real-Time Eye Blink Detection using Facial
    Landmarks", CVWW 2016). About 0.25-0.35 for an open eye, near 0 when closed;
    the paper thresholds it (or an SVM over 13 frames) to detect blinks.

    Args:
        keypoints: ``(..., K, 2)`` iBUG-68 points, or a scheme that converts to
            them (80, 104, 98 points).
        scheme: scheme name of the keypoints; None picks it by point count.

    Returns:
        ``(..., 2)`` float array: the EAR of the image-left and the image-right
        eye.
    """
    points68 = _as_ibug68(keypoints, scheme)
    ratios = []
    for p1, p2, p3, p4, p5, p6 in _EYE_POINTS:
        vertical = (np.linalg.norm(points68[..., p2, :] - points68[..., p6, :], axis=-1)
                    + np.linalg.norm(points68[..., p3, :] - points68[..., p5, :], axis=-1))
        horizontal = np.linalg.norm(points68[..., p1, :] - points68[..., p4, :], axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(vertical / (2.0 * horizontal))
    return np.stack(ratios, axis=-1)
