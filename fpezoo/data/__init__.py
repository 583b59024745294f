"""Face landmark data: records, readers, the ``tf.data`` pipeline and augmentation.

Readers (:mod:`fpezoo.data.readers`) turn each label format into
:class:`LandmarkRecord` objects; :func:`fpezoo.data.pipeline.make_dataset` crops,
augments and batches them into ``(images, y_true)`` for ``Model.fit``.
"""

from fpezoo.data.readers import (
    MissingImagesError,
    OffFaceRows,
    find_off_face_rows,
    read_aflw2000_3d,
    read_aflw_crops,
    read_coco_keypoints,
    read_mtfl,
    read_pts,
    read_tao_json,
)
from fpezoo.data.records import LandmarkRecord, landmark_box, with_landmark_boxes

__all__ = [
    "LandmarkRecord",
    "MissingImagesError",
    "OffFaceRows",
    "find_off_face_rows",
    "landmark_box",
    "read_aflw2000_3d",
    "read_aflw_crops",
    "read_coco_keypoints",
    "read_mtfl",
    "read_pts",
    "read_tao_json",
    "with_landmark_boxes",
]
