"""Training on several devices: MirroredStrategy over two logical CPU devices, in a fresh
process (logical devices must be configured before TensorFlow starts)."""

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from conftest import TINY_TRAINING
from helpers import assert_one_line_error, run

from geoseg.contracts import read_model_card

TWO_CPUS = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from geoseg import train

    chips, out, devices, settings = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    train(chips, out, devices=devices, **json.loads(settings))
    """
)


def _train_in_fresh_process(chips, out, devices: int) -> pd.DataFrame:
    settings = dict(TINY_TRAINING, epochs=3, seed=2, augment=False, batch_size=8)
    subprocess.run(
        [sys.executable, "-c", TWO_CPUS, str(chips), str(out), str(devices), json.dumps(settings)],
        check=True,
        capture_output=True,
    )
    return pd.read_csv(out / "history.csv")


def test_two_replicas_follow_the_loss_curve_of_one(tiny_chips, tmp_path):
    one = _train_in_fresh_process(tiny_chips, tmp_path / "one", devices=1)
    two = _train_in_fresh_process(tiny_chips, tmp_path / "two", devices=2)
    assert read_model_card(tmp_path / "two")["replicas"] == "2 CPUs (MirroredStrategy)"
    assert read_model_card(tmp_path / "one")["replicas"] == "one CPU"
    # Same global batch and data: only per-replica BatchNorm statistics and Dice differ.
    assert two["loss"].to_numpy() == pytest.approx(one["loss"].to_numpy(), rel=0.05)
    assert two["val_loss"].to_numpy() == pytest.approx(one["val_loss"].to_numpy(), rel=0.1)
    assert two["loss"].iloc[-1] < two["loss"].iloc[0]


def test_more_devices_than_visible_is_a_one_line_error(tiny_chips, tmp_path):
    result = run("train", str(tiny_chips), "--out", str(tmp_path / "m"), "--devices", "3")
    assert_one_line_error(result, "--devices 3", "no GPU")
    assert not (tmp_path / "m").exists() and not (tmp_path / ".m.partial").exists()
