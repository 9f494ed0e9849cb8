"""TensorFlow TensorBundle checkpoints (object-based and name-based)."""
