"""Writes the Orbax checkpoints the tests read, with the real orbax-checkpoint, in a process
of its own (JAX sees 2 host CPU devices only if XLA_FLAGS is set before it is imported).

For each checkpoint `OUT/<name>/`, `OUT/<name>.ref.npz` holds what Orbax restores (each
array's bytes as uint8, by its path joined with `/`) and `OUT/<name>.ref.json` each
array's dtype and shape, and the scalars and strings.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python orbax_job.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, serialization
from jax.sharding import Mesh, NamedSharding, PartitionSpec

OUT = Path(".")  # (the folder given on the command line: set by main, not on import)
rng = np.random.default_rng(0)


def tree(scale: float = 1.0) -> dict:
    return {
        "params": {
            "dense": {
                "kernel": (rng.normal(size=(3, 4)) * scale).astype(np.float32),
                "bias": jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16),
            },
            "blocks": [
                {"w": rng.normal(size=(2, 2)).astype(np.float16)} for _ in range(11)
            ],  # (11: "10" sorts before "2" in _METADATA)
            "codes": rng.integers(-128, 127, size=(5,), dtype=np.int8),
            "wide": rng.normal(size=(64, 33)).astype(np.float32),
        },
        "step": 7,
        "lr": 0.25,
    }


def reference(name: str, restored: dict) -> None:
    arrays, listing, values = {}, {}, {}

    def walk(node, where):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            path = f"{where}/{key}" if where else str(key)
            if isinstance(value, dict | list | tuple):
                walk(value, path)
            elif isinstance(value, np.ndarray | jax.Array) and np.ndim(value) > 0:
                array = np.asarray(value)
                arrays[path] = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
                listing[path] = [str(array.dtype), list(array.shape)]
            else:
                values[path] = value.item() if hasattr(value, "item") else value

    walk(restored, "")
    np.savez(OUT / f"{name}.ref.npz", **arrays)
    (OUT / f"{name}.ref.json").write_text(json.dumps({"arrays": listing, "values": values}))


def restored(path: Path) -> dict:
    """What Orbax restores (jax.Arrays on the devices that saved them, scalars, strings)."""
    return ocp.PyTreeCheckpointer().restore(path)


def save_standard(name: str, data: dict) -> None:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(OUT / name, data)
    checkpointer.wait_until_finished()
    reference(name, restored(OUT / name))


def save_layouts(data: dict) -> None:
    for name, options in {
        "ocdbt-zarr2": {"use_ocdbt": True, "use_zarr3": False},
        "ocdbt-zarr3": {"use_ocdbt": True, "use_zarr3": True},
        "plain-zarr2": {"use_ocdbt": False, "use_zarr3": False},
        "plain-zarr3": {"use_ocdbt": False, "use_zarr3": True},
    }.items():
        checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(**options))
        checkpointer.save(OUT / name, args=ocp.args.PyTreeSave({**data, "name": "tiny"}))
        reference(name, restored(OUT / name))


def save_manager() -> None:
    options = ocp.CheckpointManagerOptions(max_to_keep=5)
    with ocp.CheckpointManager(OUT / "manager", options=options) as manager:
        for step in range(3):
            manager.save(step, args=ocp.args.StandardSave(tree(scale=step + 1.0)))
        manager.wait_until_finished()
    for step in range(3):
        reference(f"manager-{step}", restored(OUT / "manager" / str(step) / "default"))


def save_sharded() -> None:
    assert len(jax.devices()) == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("x",))
    rows = jax.device_put(
        jnp.arange(8 * 6, dtype=jnp.float32).reshape(8, 6), NamedSharding(mesh, PartitionSpec("x"))
    )
    columns = jax.device_put(
        jnp.asarray(rng.normal(size=(4, 10)), jnp.bfloat16),
        NamedSharding(mesh, PartitionSpec(None, "x")),
    )
    assert len(rows.addressable_shards) == 2
    save_standard("sharded", {"rows": rows, "columns": columns})


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 3, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(3, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)])


def save_nnx() -> None:
    """An NNX model's state as Orbax's NNX guide saves it, and its pure dict as msgpack."""
    model = Net(nnx.Rngs(0))
    _, state = nnx.split(model)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(OUT / "nnx", state)
    checkpointer.wait_until_finished()
    pure = nnx.to_pure_dict(state)
    (OUT / "nnx.msgpack").write_bytes(serialization.to_bytes(pure))
    back = checkpointer.restore(OUT / "nnx", nnx.split(Net(nnx.Rngs(1)))[1])
    fresh = Net(nnx.Rngs(2))
    nnx.update(fresh, back)
    reference("nnx", nnx.to_pure_dict(nnx.state(fresh)))


if __name__ == "__main__":
    OUT = Path(sys.argv[1]).absolute()
    OUT.mkdir(parents=True, exist_ok=True)
    save_standard("standard", tree())
    save_layouts(tree())
    save_manager()
    save_sharded()
    save_nnx()
