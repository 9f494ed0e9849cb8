"""What every migration test checks of an output: `ckpt ls` lists what
`tf.train.list_variables` lists."""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from tests.conftest import run_cli


def migrate(*args) -> None:
    result = run_cli("migrate", *map(str, args))
    assert result.code == 0, result.err


def assert_listed_like_tf(prefix) -> None:
    result = run_cli("ls", prefix, "--json")
    assert result.code == 0, result.err
    ours = {(r["key"], tuple(r["shape"])) for r in json.loads(result.out)}
    theirs = {
        (name, tuple(shape))
        for name, shape in tf.train.list_variables(str(prefix))
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }
    assert ours == theirs


def value(prefix, key: str) -> np.ndarray:
    return tf.train.load_checkpoint(str(prefix)).get_tensor(key)
