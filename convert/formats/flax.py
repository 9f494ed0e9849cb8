"""Flax msgpack checkpoints (`flax.serialization`), read and written without Flax."""
