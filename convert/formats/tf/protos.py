"""The TensorFlow messages a checkpoint holds, declared here rather than generated.

The message classes are built at import from descriptors written out below, in a private
descriptor pool, so no protoc step is needed and TensorFlow's own registrations (when TF
is imported in the same process, as in the tests) never clash with ours. Field numbers
follow tensor_bundle.proto, tensor_shape.proto, tensor_slice.proto, versions.proto,
trackable_object_graph.proto and checkpoint_state.proto.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool

try:
    from google.protobuf.message_factory import GetMessageClass
except ImportError:  # protobuf < 4.21
    from google.protobuf.message_factory import MessageFactory

    GetMessageClass = MessageFactory().GetPrototype  # noqa: N816

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "fixed32": _F.TYPE_FIXED32,
    "double": _F.TYPE_DOUBLE,
}

# message name -> [(field name, number, type or message name, repeated)]
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "TensorShapeProto.Dim": [("size", 1, "int64", False), ("name", 2, "string", False)],
    "TensorShapeProto": [
        ("dim", 2, "TensorShapeProto.Dim", True),
        ("unknown_rank", 3, "bool", False),
    ],
    "TensorSliceProto.Extent": [("start", 1, "int64", False), ("length", 2, "int64", False)],
    "TensorSliceProto": [("extent", 1, "TensorSliceProto.Extent", True)],
    "VersionDef": [
        ("producer", 1, "int32", False),
        ("min_consumer", 2, "int32", False),
        ("bad_consumers", 3, "int32", True),
    ],
    "BundleHeaderProto": [
        ("num_shards", 1, "int32", False),
        ("endianness", 2, "int32", False),
        ("version", 3, "VersionDef", False),
    ],
    "BundleEntryProto": [
        ("dtype", 1, "int32", False),
        ("shape", 2, "TensorShapeProto", False),
        ("shard_id", 3, "int32", False),
        ("offset", 4, "int64", False),
        ("size", 5, "int64", False),
        ("crc32c", 6, "fixed32", False),
        ("slices", 7, "TensorSliceProto", True),
    ],
    "BoolValue": [("value", 1, "bool", False)],  # google.protobuf.BoolValue, same wire form
    "ObjectReference": [("node_id", 1, "int32", False), ("local_name", 2, "string", False)],
    "SerializedTensor": [
        ("name", 1, "string", False),
        ("full_name", 2, "string", False),
        ("checkpoint_key", 3, "string", False),
    ],
    "SlotVariableReference": [
        ("original_variable_node_id", 1, "int32", False),
        ("slot_name", 2, "string", False),
        ("slot_variable_node_id", 3, "int32", False),
    ],
    "RegisteredSaver": [("name", 1, "string", False), ("object_name", 2, "string", False)],
    "TrackableObject": [
        ("children", 1, "ObjectReference", True),
        ("attributes", 2, "SerializedTensor", True),
        ("slot_variables", 3, "SlotVariableReference", True),
        ("registered_saver", 4, "RegisteredSaver", False),
        ("has_checkpoint_values", 5, "BoolValue", False),
    ],
    "TrackableObjectGraph": [("nodes", 1, "TrackableObject", True)],
    "CheckpointState": [
        ("model_checkpoint_path", 1, "string", False),
        ("all_model_checkpoint_paths", 2, "string", True),
        ("all_model_checkpoint_timestamps", 3, "double", True),
        ("last_preserved_timestamp", 4, "double", False),
    ],
}
_PACKAGE = "convert_tf"  # our own package name: never collides with TF's `tensorflow.*`


def _build() -> dict[str, Any]:  # (classes made at run time: their fields are unknown to mypy)
    file = descriptor_pb2.FileDescriptorProto(
        name="convert_tf.proto", package=_PACKAGE, syntax="proto3"
    )
    top: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full_name, fields in _MESSAGES.items():
        outer, _, inner = full_name.partition(".")
        if outer not in top:
            top[outer] = file.message_type.add(name=outer)
        msg = top[outer].nested_type.add(name=inner) if inner else top[outer]
        for name, number, kind, repeated in fields:
            field = msg.field.add(
                name=name, number=number, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            )
            if kind in _TYPES:
                field.type = _TYPES[kind]
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{kind}"
    # An Extent's length is in a oneof: absent means "to the end of the dimension".
    extent = next(m for m in top["TensorSliceProto"].nested_type if m.name == "Extent")
    extent.oneof_decl.add(name="has_length")
    extent.field[1].oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _build()
TensorShapeProto = _CLASSES["TensorShapeProto"]
TensorSliceProto = _CLASSES["TensorSliceProto"]
BundleHeaderProto = _CLASSES["BundleHeaderProto"]
BundleEntryProto = _CLASSES["BundleEntryProto"]
TrackableObjectGraph = _CLASSES["TrackableObjectGraph"]
CheckpointState = _CLASSES["CheckpointState"]
