"""fpezoo.train under tf.distribute: MirroredStrategy on two logical CPU devices and
MultiWorkerMirroredStrategy with two local worker processes.

Each run happens in subprocesses (device configuration and TF_CONFIG are
process-wide) on a tiny FPENet and synthetic faces, so the tests stay fast.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_SECONDS = 240

# Trains a width-4 FPENet on 16x16 synthetic faces with fpezoo.train.
# argv: output_dir, strategy ("default", "mirrored", "multi_worker"), logical CPU devices.
WORKER_SCRIPT = r"""
import json, sys
output_dir, strategy, logical_devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
import numpy as np
import tensorflow as tf
if logical_devices > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(logical_devices)])
import fpezoo.training

def faces():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32, 16, 16, 1)).astype("float32")
    points = np.concatenate([rng.uniform(3, 12, (32, 5, 2)), np.ones((32, 5, 1))], -1)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = tf.data.Dataset.from_tensor_slices((images, points.astype("float32")))
    return dataset.batch(8).repeat().with_options(options)

distribution = {"strategy": strategy}
if strategy == "mirrored":
    distribution["devices"] = [f"/cpu:{i}" for i in range(logical_devices)]
config = {
    "model": {"builder": "FPENet", "config": {"num_keypoints": 5, "width": 4, "input_shape": [16, 16, 1]}},
    "loss": {"name": "l1"},
    "optimizer": {"name": "sgd"},
    "schedule": {"name": "constant", "base_lr": 0.01},
    "epochs": 2, "batch_size": 8, "steps_per_epoch": 3, "verbose": 2,
    "output_dir": output_dir, "distribution": distribution,
}
model, summary = fpezoo.training.train(config, train_data=faces)
print("SUMMARY " + json.dumps(summary), flush=True)
"""


def _run(args, env=None, wait=True):
    command = [sys.executable, "-c", WORKER_SCRIPT, *map(str, args)]
    full_env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    process = subprocess.Popen(command, env=full_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process.communicate(timeout=TIMEOUT_SECONDS)[0] if wait else process


def _summary(output, returncode):
    assert returncode == 0, output[-3000:]
    line = [line for line in output.splitlines() if line.startswith("SUMMARY ")][-1]
    return json.loads(line[len("SUMMARY "):])


def _weights(path):
    import h5py

    arrays = []
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: arrays.append(item[()]) if hasattr(item, "shape") else None)
    return arrays


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tmp_path):
    process = _run([tmp_path / "mirrored", "mirrored", 2], wait=False)
    single_output = _run([tmp_path / "single", "default", 1])
    mirrored_output = process.communicate(timeout=TIMEOUT_SECONDS)[0]
    mirrored = _summary(mirrored_output, process.returncode)
    assert "SUMMARY " in single_output, single_output[-3000:]
    assert mirrored["num_replicas"] == 2
    assert mirrored["optimizer_iterations"] == 6
    # Same global batches and SGD: the gradient averaged over two replicas equals
    # the one-device gradient, so both runs end at the same weights.
    mirrored_weights = _weights(tmp_path / "mirrored" / "final.weights.h5")
    single_weights = _weights(tmp_path / "single" / "final.weights.h5")
    assert len(mirrored_weights) == len(single_weights) > 0
    for a, b in zip(mirrored_weights, single_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_two_local_workers_agree(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(_run([tmp_path / "run", "multi_worker", 1],
                              env={"TF_CONFIG": tf_config}, wait=False))
    try:
        outputs = [process.communicate(timeout=TIMEOUT_SECONDS)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    summaries = [_summary(output, process.returncode) for output, process in zip(outputs, processes)]
    assert [summary["num_replicas"] for summary in summaries] == [2, 2]
    assert [summary["optimizer_iterations"] for summary in summaries] == [6, 6]
    chief = _weights(tmp_path / "run" / "final.weights.h5")
    worker = _weights(tmp_path / "run" / "workers" / "worker1" / "final.weights.h5")
    assert len(chief) == len(worker) > 0
    for a, b in zip(chief, worker):
        np.testing.assert_array_equal(a, b)
    for run_dir in (tmp_path / "run", tmp_path / "run" / "workers" / "worker1"):
        rows = (run_dir / "history.csv").read_text().splitlines()
        assert [row.split(",")[0] for row in rows[1:]] == ["0", "1"]
