"""The naming and layout conventions of the frameworks, which both the formats (their
files follow them) and the rules (their layers are found by them) use: flat dotted keys,
TF1 variable names, Keras' class names, weight layouts and model configs."""
