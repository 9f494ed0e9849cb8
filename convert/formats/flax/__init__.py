"""Flax msgpack checkpoints (`flax.serialization`), read and written without Flax or JAX.

`flax.serialization.to_bytes(tree)` is msgpack of a nested state dict (lists become maps
keyed "0", "1", ...). Arrays are msgpack extension 1, whose payload is itself msgpack:
`[shape, dtype name, raw C-order bytes]`; extension 3 is a numpy scalar (same payload,
shape `[]`); extension 2 a Python complex (`[real, imag]`). Arrays over `MAX_CHUNK_SIZE`
bytes are split into `{"__msgpack_chunked_array__": true, "shape": {...}, "chunks": {...}}`.

The parts, each with its reason to be apart in its docstring:

- layout.py: Flax's extension codes and keys, and msgpack's header rules;
- walk.py: the file's structure walked without reading array data (the hostile-bytes
  checks);
- reader.py: the walked tree as a Graph of lazy Tensors, and the sniff;
- writer.py: a Graph streamed as the bytes `to_bytes` writes;
- compare.py: a checkpoint against a target, as `from_bytes` would not report it.

The registry reads `sniff`, `read` and `write` from this package.
"""

from convert.formats.flax.compare import compare_to_target
from convert.formats.flax.reader import read, sniff
from convert.formats.flax.writer import write

__all__ = ["compare_to_target", "read", "sniff", "write"]
