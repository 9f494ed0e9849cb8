"""The built-in formats: one module or package each, declared here by name, extensions
and module (imported only when used), with the framework whose conventions their files
follow and the separator of their flat keys (the one owner of both facts).

Order is sniffing order after the format the file name points at: TensorFlow first (a
prefix names no file, so only its sniff can claim it), then the formats with magic
numbers or strict headers, and the Keras 2 sniff last, since it claims any HDF5 file
(so that a foreign HDF5 file gets an error that says so)."""

from ..registry import Format, register

for _format in (
    Format("tf", "TensorFlow checkpoint (TensorBundle; object- or name-based; SavedModel)",
           (".index", ".ckpt"), "convert.formats.tf",
           options=("name_based", "max_to_keep", "directory"), framework="keras"),
    Format("safetensors", "safetensors (Hugging Face), single files", (".safetensors",),
           "convert.formats.safetensors", options=("max_shard_size",), framework="torch",
           separator="."),
    Format("sharded", "Hugging Face sharded set: *.index.json with a weight_map "
           "(safetensors or torch shards)", (".index.json",), "convert.formats.sharded",
           options=("max_shard_size",), framework="torch", separator="."),
    Format("torch", "PyTorch torch.save (zip and legacy), state dicts and nested checkpoints",
           (".pt", ".pth", ".bin"), "convert.formats.torch",
           options=("max_shard_size", "strided"), framework="torch", separator="."),
    Format("npz", "NumPy .npz archive of arrays, keys joined with '/'", (".npz",),
           "convert.formats.npz", options=("compress",)),
    Format("flax", "Flax msgpack state dict (flax.serialization.to_bytes)", (".msgpack",),
           "convert.formats.flax", framework="flax"),
    Format("keras", "Keras 3 .weights.h5, sharded .weights.json, .keras archive",
           (".weights.h5", ".weights.json", ".keras"), "convert.formats.keras", "keras3_",
           options=("max_shard_size",), framework="keras"),
    Format("keras-h5", "Keras 2 legacy HDF5 weights and full-model .h5 (tf.keras, tf_keras)",
           (".h5", ".hdf5"), "convert.formats.keras", "legacy_", framework="keras"),
):
    register(_format)
