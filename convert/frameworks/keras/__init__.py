"""Keras' conventions: layer names in object paths, weight layouts of Keras 2 and Keras 3
files, and model configs."""
