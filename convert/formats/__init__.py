"""The built-in formats: one module or package each, declared here by name, extensions
and module (imported only when used), with the framework whose conventions their files
follow and the separator of their flat keys (the one owner of both facts); and the
writer options, which the CLI's flags and a batch manifest's keys are made from.

Order is sniffing order after the format the file name points at: TensorFlow first (a
prefix names no file, so only its sniff can claim it), then the formats with magic
numbers or strict headers, and the Keras 2 sniff last, since it claims any HDF5 file
(so that a foreign HDF5 file gets an error that says so)."""

from ..registry import Format, WriterOption, register, register_option

for _option in (
    WriterOption("max_to_keep", "--max-to-keep", "max_to_keep", "int",
                 "tf: write DST as a CheckpointManager directory keeping this many.",
                 chooses_tf=True),
    WriterOption("name_based", "--tf-names", "tf_names", "flag",
                 "tf: write a name-based (TF1 Saver) checkpoint without an object graph.",
                 chooses_tf=True),
    WriterOption("max_shard_size", "--max-shard-size", "max_shard_size", "size",
                 "torch/safetensors/keras: split DST into shards of at most this size "
                 "(2GB, 500MB)."),
    WriterOption("compress", "--compress", "compress", "flag", "npz: deflate the members."),
    WriterOption("strided", "--strided", "strided", "flag",
                 "torch: write transposed tensors as strided views of the source's bytes (as "
                 "torch.save writes w.t()): no transpose; they load non-contiguous."),
):
    register_option(_option)

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
