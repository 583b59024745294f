"""scripts/label_study.py (issue 30, the labels study) and train_pretrained.py's --combine-teachers."""

import importlib.util
import json
import pathlib
import types

import numpy as np
import pytest

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = _script("label_study")


def _face(scale=1.0):
    """A 68-point face: level outer eye corners, eye and mouth corners where a face has them."""
    points = np.random.default_rng(0).uniform(-1.0, 1.0, (68, 2)) * [30.0, 40.0]
    points[[36, 39, 42, 45]] = [[-20.0, -10.0], [-8.0, -10.0], [8.0, -10.0], [20.0, -10.0]]
    points[[48, 54]] = [[-12.0, 20.0], [12.0, 20.0]]
    points[[37, 38]] = [[-16.0, -12.0], [-12.0, -12.0]]
    return points * scale


def _rotated(points, angle, centre):
    cos, sin = np.cos(angle), np.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]]) + centre


def _aflw_like(true68, yaw, teachers, validation=None):
    """A FaceSet with AFLW's 16 human points taken from ``true68``."""
    mapped, projection, groups, regions = study.aflw_layout()
    count = len(true68)
    return study.FaceSet(
        name="aflw-crops", images=np.array([pathlib.Path(f"images/f{i}.jpg") for i in range(count)], dtype=object),
        human=true68[:, mapped].copy(), projection=projection, groups=groups, regions=regions,
        teachers=teachers, flip={t: np.zeros(count) for t in study.TEACHERS}, yaw=np.asarray(yaw, dtype=float),
        norm=np.full(count, 120.0 / np.sqrt(2.0)),
        validation=np.zeros(count, bool) if validation is None else validation, keep=np.ones(count, bool))


def test_the_split_is_the_training_runs():
    from fpezoo.data.records import in_validation_split

    assert study.recipe_split(PROJECT_ROOT / "configs" / "fpenet68_w32.json") == (0.05, 0)
    images = [pathlib.Path(f"/data/set/images/image{i:05d}.jpg") for i in range(2000)]
    mask = study.validation_mask(images, 0.05, 0)
    expected = [in_validation_split(types.SimpleNamespace(image=pathlib.Path(f"elsewhere/images/{p.name}")), 0.05, 0)
                for p in images]
    assert mask.tolist() == expected  # only the folder and file names decide
    assert 60 < mask.sum() < 140
    assert not study.validation_mask(images[:10], 0.0, 0).any()


def test_yaw_bins_follow_the_aflw2000_3d_protocol():
    assert study.yaw_bin([-10.0, 30.0, 30.5, -60.0, 61.0, -95.0]).tolist() == [0, 0, 1, 1, 2, 2]


def test_offsets_are_fitted_in_the_face_frame_and_undone():
    rng = np.random.default_rng(1)
    count = 40
    angles = rng.uniform(-0.6, 0.6, count)
    scales = rng.uniform(0.8, 1.2, count)
    true68 = np.stack([_rotated(_face(s), a, [60.0, 60.0]) for a, s in zip(angles, scales)])
    frame = study.face_frame(true68)
    np.testing.assert_allclose(frame[0][:, 0, 0], np.cos(angles), atol=1e-9)
    offset = np.array([0.02, -0.01])  # teacher minus human, in the face frame, over the box scale
    shift = np.einsum("nji,j->ni", frame[0], offset) * frame[1][:, None]
    teacher = true68 + shift[:, None, :]
    yaw = np.where(np.arange(count) % 2, 45.0, 5.0)
    face_set = _aflw_like(true68, yaw, {"3ddfa_v2": teacher, "mediapipe": teacher})
    fitted = study.fit_offsets(teacher, face_set, np.ones(count, bool), frame)
    np.testing.assert_allclose(fitted["global"][:2], [offset, offset], atol=1e-9)
    np.testing.assert_allclose(fitted["global"][2], [0.0, 0.0])  # no face beyond 60 degrees
    corrected = study.apply_offsets(teacher, study.offsets68(fitted, teacher, yaw, frame), frame)
    np.testing.assert_allclose(corrected, true68, atol=1e-9)
    errors = study.point_errors(teacher, face_set)
    np.testing.assert_allclose(errors, np.repeat(np.hypot(*offset) * frame[1][:, None] / (120.0 / np.sqrt(2.0)), 16, axis=1))


def test_per_point_offsets_move_the_eyes_and_mouth_between_their_corners():
    _, projection, groups, regions = study.aflw_layout()
    points = _face()[None]
    frame = (np.eye(2)[None], np.ones(1))
    offsets = {"global": np.full((3, 2), 0.5), "points": np.zeros((3, 16, 2))}
    offsets["points"][0, groups["eye_corners"][1]] = [0.3, 0.0]  # point 39, the left eye's inner corner
    table = study.offsets68(offsets, points, [0.0], frame, regions)[0]
    np.testing.assert_allclose(table[36], [0.0, 0.0])
    np.testing.assert_allclose(table[39], [0.3, 0.0])
    np.testing.assert_allclose(table[37], [0.1, 0.0])  # a third of the way from 36 to 39
    np.testing.assert_allclose(table[38], [0.2, 0.0])
    np.testing.assert_allclose(table[45], [0.0, 0.0])
    np.testing.assert_allclose(table[[8, 17, 30]], 0.5)  # the rest of the face: the global offset
    np.testing.assert_allclose(study.offsets68(offsets, points, [0.0], frame)[0], 0.5)


def test_rules_take_mediapipe_only_where_it_found_the_face_and_agrees():
    base = np.zeros((4, 68, 2))
    other = np.ones((4, 68, 2))
    other[3] = np.nan
    yaw = np.array([10.0, 45.0, 10.0, 10.0])
    disagreement = np.array([0.01, 0.01, 0.5, np.nan])
    pose = study.pose_rule(base, other, yaw, disagreement, 0.1)
    assert pose[0, 36, 0] == 1.0 and pose[0, 30, 0] == 0.0  # eyes and mouth only
    assert (pose[1:] == 0.0).all()  # too turned, disagrees, no face
    average = study.average_rule(base, other, yaw, disagreement, [0.75, 0.25, 0.0], [0.1, 0.1, 0.1])
    assert average[0, 50, 0] == 0.75 and average[1, 50, 0] == 0.25
    assert (average[2:] == 0.0).all() and not np.isnan(average).any()


def test_mtfl_rows_are_off_the_face_when_every_teacher_finds_it_elsewhere():
    face = _face()
    five = study.project(face[None], study.MTFL_PROJECTION)[0]
    human = np.stack([five, five + [0.0, 30.0], five, five + [0.0, 30.0], five])
    near = np.repeat(face[None], 5, axis=0)
    other = near.copy()
    other[2] += [0.0, 30.0]  # one teacher elsewhere, the other on the human points: kept
    other[3] = np.nan  # the only teacher that found it is elsewhere: off
    other[4] = np.nan
    off = study.mtfl_off_face(human, [near, other])
    assert off.tolist() == [False, True, False, True, False]
    assert not study.mtfl_off_face(human[:1], [np.full((1, 68, 2), np.nan)]).any()  # no teacher: kept


def test_paired_bootstrap_measures_the_gain_within_yaw_bins():
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0.02, 0.05, 300)
    bins = np.arange(300) % 3
    result = study.paired_bootstrap(baseline - 0.002, baseline, bins, resamples=200)
    assert result["gain"] == pytest.approx(0.2) and result["ci95"] == pytest.approx([0.2, 0.2])
    assert result["p_no_gain"] == 0.0
    noise = study.paired_bootstrap(baseline + rng.normal(0.0, 0.005, 300), baseline, bins, resamples=500)
    assert noise["ci95"][0] < 0.0 < noise["ci95"][1]


def test_the_study_fits_on_training_faces_and_finds_the_better_teacher():
    rng = np.random.default_rng(2)
    count = 120
    true68 = np.stack([_rotated(_face(), a, [60.0, 60.0]) for a in rng.uniform(-0.3, 0.3, count)])
    yaw = np.tile([0.0, 45.0, 75.0], count // 3)
    biased = true68 + [1.0, -0.5] + rng.normal(0.0, 0.8, true68.shape)  # 3DDFA_V2: shifted and noisy
    exact = true68 + rng.normal(0.0, 0.2, true68.shape)
    validation = np.arange(count) >= 90
    face_set = _aflw_like(true68, yaw, {"3ddfa_v2": biased, "mediapipe": exact}, validation)
    result = study.study(face_set, resamples=100)
    assert result["faces"]["train"] == 90 and result["faces"]["validation"] == 30
    scores = {name: value["validation"]["choice"]["mean_of_bins"] for name, value in result["candidates"].items()}
    assert scores["3ddfa_v2/global"] < scores["3ddfa_v2/none"] - 0.3  # the shift is learnt
    # Inverse-variance weighting would give MediaPipe 0.8**2 / (0.8**2 + 0.2**2) = 0.94.
    assert min(result["parameters"]["average/none"]["weights"]) >= 0.9
    assert study.best_candidate(result).startswith(("average/", "mediapipe/", "pose/"))
    assert result["bootstrap"][study.BASELINE]["gain"] == 0.0
    # A candidate fitted on the validation faces only would differ: the fit never sees them.
    face_set.human[validation] += 5.0
    again = study.study(face_set, resamples=100)
    assert again["parameters"]["offsets/3ddfa_v2"] == result["parameters"]["offsets/3ddfa_v2"]
    with pytest.raises(ValueError, match="rule/correction"):
        study.candidate_labels(face_set, ~validation, ["3ddfa_v2/sideways"])
    assert "3ddfa_v2/none" in study.table(result, "title")


def test_the_recorded_study_chose_the_rule_train_pretrained_writes():
    result = json.loads((PROJECT_ROOT / "docs" / "results" / "validation" / "label_study.json").read_text())
    assert result["choice"]["best"] == study.COMBINED_RULE
    assert result["choice"]["best_bootstrap"]["ci95"][0] > 0.0  # beyond noise
    assert result["split"] == {"config": "configs/base/ibug68_3ddfa_v2.json", "validation_fraction": 0.05,
                               "seed": 0, "function": "fpezoo.data.records.in_validation_split"}


def test_combine_teachers_replaces_the_teacher_points_by_image(monkeypatch):
    from fpezoo.data.records import LandmarkRecord

    script = _script("train_pretrained")
    records = [LandmarkRecord(image=pathlib.Path(f"/d/mtfl/lfw_5590/{n}.jpg"), keypoints=np.zeros((68, 2), "float32"),
                              visibility=np.ones(68, "float32"), box=None, scheme="ibug68", source="t")
               for n in ("a", "b")]
    calls = []

    def combined_labels(data_root, data_set, fraction, seed):
        calls.append((pathlib.Path(data_root), data_set, fraction, seed))
        return {("lfw_5590", "a.jpg"): np.full((68, 2), 1.0), ("lfw_5590", "b.jpg"): np.full((68, 2), 2.0)}, \
            {"rule": "average/per_point"}

    fake = types.SimpleNamespace(recipe_split=lambda config: (0.05, 0), DEFAULT_CONFIG="c.json",
                                 combined_labels=combined_labels)
    monkeypatch.setattr(script, "_label_study", lambda: fake)
    combined, report = script.with_combined_teacher_points(records, "/d/mtfl", "mtfl")
    assert [r.keypoints[0, 0] for r in combined] == [1.0, 2.0] and combined[0].source == "t+combined"
    assert calls == [(pathlib.Path("/d"), "mtfl", 0.05, 0)] and report["combined_rule"] == "average/per_point"
    with pytest.raises(ValueError, match="3ddfa_v2"):
        script._check_combined_teacher("mediapipe")
    with pytest.raises(SystemExit):
        script.main(["out.json", "--combine-teachers"])  # the default teacher is MediaPipe


def test_mtfl_off_face_rows_on_the_shared_data(shared_data):
    face_set, report = study.load_mtfl(shared_data, 0.05, 0)
    assert 2300 <= report["dropped_web"] <= 2400  # the data README's 2,351 web rows
    assert report["flagged_by_both_rules"] == report["find_off_face_rows_flags"]
    assert face_set.keep.sum() < 10000 - report["dropped"] + 1
    assert np.isfinite(face_set.norm).all() and (face_set.norm > 5).all()
