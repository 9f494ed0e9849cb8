"""Built-in formats, one module or package each; importing this registers them all.

Registration order is sniffing order: a format whose sniff is cheaper or stricter first."""

from . import flax, keras, npz, safetensors, tf, torch  # noqa: F401
