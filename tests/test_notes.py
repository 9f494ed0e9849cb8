"""What a conversion leaves behind is said, by every writer, in the same counted words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convert.core.notes import count, some


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory) -> Path:
    """torch.save of model + Adam state + step + epoch, as training scripts write it."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    path = tmp_path_factory.mktemp("train") / "train.pt"
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 7, "epoch": 2},
        path,
    )
    return path


# (A .h5 is refused from a torch file: it does not record Keras' layer order.)
@pytest.mark.parametrize("target", ["t.ckpt", "t.safetensors", "t.npz", "t.msgpack"])
def test_every_writer_says_which_values_it_dropped(training_checkpoint, tmp_path, ckpt, target):
    result = ckpt("convert", training_checkpoint, tmp_path / target, "--json")
    assert result.code == 0, result.err
    notes = [n for n in json.loads(result.out)["notes"] if "non-tensor" in n]
    assert len(notes) == 1, notes
    assert notes[0].startswith("dropped 3 non-tensor values (")
    for name in ("step", "epoch", "param_groups"):
        assert name in notes[0], notes[0]


def test_the_tf_output_still_loads(training_checkpoint, tmp_path, ckpt):
    from tests.tf.conftest import tf

    assert ckpt("convert", training_checkpoint, tmp_path / "t.ckpt").code == 0
    keys = dict(tf.train.list_variables(str(tmp_path / "t.ckpt")))
    assert any("model" in k for k in keys)


def test_words_are_counted_and_cut_short_with_how_many_more():
    assert count(1, "non-tensor value") == "1 non-tensor value"
    assert count(18, "non-tensor value") == "18 non-tensor values"
    assert count(2, "alias", "aliases") == "2 aliases"
    assert some(f"v{i}" for i in range(18)) == "v0, v1, v2, v3, v4 and 13 more"
    assert some(["a", "b"]) == "a, b"


def test_many_dropped_values_say_how_many_more(tmp_path, ckpt):
    import torch

    torch.save({"w": torch.ones(2), **{f"value_{i}": i for i in range(18)}}, tmp_path / "m.pt")
    result = ckpt("convert", tmp_path / "m.pt", tmp_path / "m.safetensors", "--json")
    assert result.code == 0, result.err
    (note,) = json.loads(result.out)["notes"]
    assert note.startswith("dropped 18 non-tensor values (") and note.endswith("and 13 more")


def test_shard_note_is_true_when_a_tensor_is_larger_than_the_limit(tmp_path, ckpt):
    import torch
    from safetensors.torch import load_file

    torch.save({"big": torch.ones(10_000), "small": torch.ones(10)}, tmp_path / "s.pt")
    result = ckpt(
        "convert",
        tmp_path / "s.pt",
        tmp_path / "o.safetensors",
        "--json",
        "--max-shard-size",
        "10KB",
    )
    assert result.code == 0, result.err
    (note,) = json.loads(result.out)["notes"]
    assert "at most 10 KB (10,000 bytes) each, but for 1 tensor larger than that" in note
    assert note.endswith(": big"), note
    shards = sorted(tmp_path.glob("o-*.safetensors"))
    assert [sorted(load_file(str(s))) for s in shards] == [["big"], ["small"]]
