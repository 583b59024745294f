"""Head-pose yaw error of ``fpezoo.geometry.head_pose`` on AFLW2000-3D.

Usage::

    python benchmarks/head_pose.py [--data ../shared/data] [--output head_pose.json]

Feeds each face's ground-truth points (``pts68_fitted`` x, y, the manual
``pts68_reannotated``, and AFLW's own 21 points ``pts21``, which hold 13 of the
14 head-pose points, invisible ones left out) to :func:`fpezoo.geometry.head_pose` with the 450x450
image size and compares the yaw with the set's ``yaw_deg`` (the 3DDFA pose
labels; both use "positive = face turned toward the image left"). The error is
the absolute angle difference wrapped to [0, 180] (a few labels lie beyond
+-90 degrees). Mean absolute error per |yaw| bin (<= 30, 30-60, > 60, the
3DDFA bins), over the three bins, and over all faces, for two cameras: the
default focal length (the image width) and a ten times longer one (close to
the weak-perspective projection the labels were fitted with). Only yaw is
labelled in the shared data, so pitch and roll are not measured.
"""

import argparse
import json
import pathlib
import time

import numpy as np

from fpezoo import evaluation, geometry

IMAGE_SIZE = (450, 450)
YAW_BINS = {"|yaw|<=30": (0.0, 30.0), "30<|yaw|<=60": (30.0, 60.0), "|yaw|>60": (60.0, np.inf)}


def wrapped_error(predicted, target):
    """Absolute angle difference in degrees, wrapped to [0, 180]."""
    difference = (np.asarray(predicted) - np.asarray(target) + 180.0) % 360.0 - 180.0
    return np.abs(difference)


def yaw_errors_by_bin(predicted_yaw, labelled_yaw):
    """Mean absolute yaw error per |yaw| bin, the mean of the bins and overall."""
    errors = wrapped_error(predicted_yaw, labelled_yaw)
    magnitude = np.abs(labelled_yaw)
    result = {}
    for name, (low, high) in YAW_BINS.items():
        in_bin = (magnitude > low if low > 0 else magnitude >= low) & (magnitude <= high)
        result[name] = {"faces": int(in_bin.sum()), "yaw_mae_deg": float(np.mean(errors[in_bin]))}
    result["mean_of_bins"] = float(np.mean([result[name]["yaw_mae_deg"] for name in YAW_BINS]))
    result["all"] = {"faces": int(errors.size), "yaw_mae_deg": float(np.mean(errors)),
                     "yaw_median_error_deg": float(np.median(errors))}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(evaluation.data_dir()), help="the shared data folder")
    parser.add_argument("--output", default="head_pose.json")
    args = parser.parse_args()

    labels_path = pathlib.Path(args.data) / "aflw2000-3d" / "landmarks.npz"
    if not labels_path.is_file():
        raise SystemExit(f"AFLW2000-3D labels not found: {labels_path}")
    labels = np.load(labels_path)
    yaw = labels["yaw_deg"].astype("float64")
    aflw21 = labels["pts21"].astype("float64")
    aflw21[(aflw21 < 0).any(axis=-1)] = np.nan  # AFLW marks invisible points -1
    inputs = {  # name -> (keypoints, scheme)
        "pts68_fitted": (labels["pts68_fitted"][..., :2], "ibug68"),
        "pts68_reannotated": (labels["pts68_reannotated"], "ibug68"),
        "pts21 (AFLW)": (aflw21, "aflw21"),
    }
    cameras = {"focal=width": None, "focal=10*width": 10.0 * IMAGE_SIZE[1]}

    results = {"faces": int(len(yaw)), "image_size": IMAGE_SIZE, "runs": []}
    print(f"{'input':<18} {'camera':<15} " + " ".join(f"{name:>13}" for name in YAW_BINS)
          + f" {'bins mean':>10} {'all':>7} {'ms/face':>8}")
    for input_name, (keypoints, scheme) in inputs.items():
        for camera_name, focal_length in cameras.items():
            start = time.perf_counter()
            pose = geometry.head_pose(keypoints, IMAGE_SIZE, scheme=scheme,
                                      focal_length=focal_length)
            milliseconds = 1000.0 * (time.perf_counter() - start) / len(yaw)
            solved = np.isfinite(pose.yaw)
            summary = yaw_errors_by_bin(pose.yaw[solved], yaw[solved])
            results["runs"].append({"input": input_name, "camera": camera_name,
                                    "faces_without_pose": int((~solved).sum()),
                                    "ms_per_face": milliseconds, **summary})
            print(f"{input_name:<18} {camera_name:<15} "
                  + " ".join(f"{summary[name]['yaw_mae_deg']:13.2f}" for name in YAW_BINS)
                  + f" {summary['mean_of_bins']:10.2f} {summary['all']['yaw_mae_deg']:7.2f}"
                  + f" {milliseconds:8.3f}")
    for run in results["runs"][::len(cameras)]:
        print(f"faces per bin, {run['input']}: " + ", ".join(
            f"{name} {run[name]['faces']}" for name in YAW_BINS)
            + f" (no pose: {run['faces_without_pose']}, fewer than 6 of the 14 points)")
    pathlib.Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
