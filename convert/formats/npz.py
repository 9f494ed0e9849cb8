"""NumPy `.npz` checkpoints (keys joined with `/`)."""
