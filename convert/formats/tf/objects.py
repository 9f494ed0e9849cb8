"""Between TensorFlow's object graph (`_CHECKPOINTABLE_OBJECT_GRAPH`) and the Graph.

A variable node (no children, one `VARIABLE_VALUE` attribute) becomes a Tensor leaf;
every other node becomes a Node, with any attributes kept as edges named
`.ATTRIBUTES/<name>`. Nodes reached by several parents stay one object (aliases), and
slot variables become Slots on their optimizer node.
"""

from __future__ import annotations

from collections import deque
from typing import cast

from convert.core.errors import FormatError
from convert.core.graph import EdgeTarget, Graph, Node, Slot
from convert.core.meta import (
    PRIMARY_PATH,
    SOURCE_KEY,
    TF_REGISTERED_SAVER,
    TF_REGISTERED_SAVERS,
    VARIABLE_NAME,
)
from convert.core.tensor import Tensor
from convert.formats.tf import protos
from convert.formats.tf.bundle import BundleReader

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VALUE = "VARIABLE_VALUE"
ATTRIBUTE_EDGE = ".ATTRIBUTES/"


def escape(name: str) -> str:
    return name.replace(".", "..").replace("/", ".S")


def tensor_for(reader: BundleReader, key: str, full_name: str = "") -> Tensor:
    raw = key.encode("utf-8")
    if raw not in reader.entries:
        raise FormatError(
            f"object graph names key {key!r}, which is not in the checkpoint", reader.index_path
        )
    meta = {SOURCE_KEY: key, VARIABLE_NAME: full_name} if full_name else {SOURCE_KEY: key}
    return reader.tensor(raw, meta)


def read_object_graph(reader: BundleReader, graph: Graph) -> set[str]:
    """Fill `graph` from the object graph; returns the checkpoint keys it used."""
    proto = protos.TrackableObjectGraph()
    try:
        proto.ParseFromString(reader.read(OBJECT_GRAPH_KEY.encode()).reshape(-1)[0])
    except FormatError:
        raise
    except Exception:
        raise FormatError(
            "the object graph is not a valid TrackableObjectGraph", reader.index_path
        ) from None
    nodes = proto.nodes
    if not nodes:
        raise FormatError("the object graph has no nodes", reader.index_path)
    used: set[str] = set()

    def check_id(node_id: int) -> int:
        if not 0 <= node_id < len(nodes):
            raise FormatError(
                f"object graph refers to node {node_id} of {len(nodes)}", reader.index_path
            )
        return node_id

    first_paths = _first_paths(nodes, check_id)
    items: list[EdgeTarget] = []
    for node, path in zip(nodes, first_paths, strict=True):
        attrs = list(node.attributes)
        if (
            not node.children
            and not node.slot_variables
            and len(attrs) == 1
            and attrs[0].name == VALUE
        ):
            tensor = tensor_for(reader, attrs[0].checkpoint_key, attrs[0].full_name)
            if path is not None:
                tensor.meta[PRIMARY_PATH] = path
            items.append(tensor)
            used.add(attrs[0].checkpoint_key)
            continue
        obj = Node()
        for attr in attrs:
            tensor = tensor_for(reader, attr.checkpoint_key, attr.full_name)
            if path is not None:
                tensor.meta[PRIMARY_PATH] = path + (ATTRIBUTE_EDGE + attr.name,)
            obj.edges[ATTRIBUTE_EDGE + attr.name] = tensor
            used.add(attr.checkpoint_key)
        if node.HasField("registered_saver") and node.registered_saver.name:
            obj.meta[TF_REGISTERED_SAVER] = node.registered_saver.name
        items.append(obj)
    if not isinstance(items[0], Node):
        raise FormatError("the object graph's root is a variable", reader.index_path)
    graph.root = items[0]
    for node, item in zip(nodes, items, strict=True):
        if not isinstance(item, Node):  # (a variable: it has no children, no slots)
            continue
        for ref in node.children:
            item.edges[ref.local_name] = items[check_id(ref.node_id)]
        for ref in node.slot_variables:
            value = items[check_id(ref.slot_variable_node_id)]
            if not isinstance(value, Tensor):
                raise FormatError(f"slot {ref.slot_name!r} is not a variable", reader.index_path)
            # (not checked here, as before: `Graph.entries` refuses a Node as a variable)
            variable = cast(Tensor, items[check_id(ref.original_variable_node_id)])
            graph.slots.append(Slot(variable, item, ref.slot_name, value))
    savers = [
        (path, node.meta[TF_REGISTERED_SAVER])
        for path, node in graph.nodes()
        if TF_REGISTERED_SAVER in node.meta
    ]
    if savers:
        graph.root.meta[TF_REGISTERED_SAVERS] = {"/".join(p): name for p, name in savers}
        for path, name in savers:
            graph.notes.append(
                f"object {'/'.join(path)} is saved by TensorFlow's registered "
                f"saver {name!r} into files of its own, which only TensorFlow "
                "can read; its values there are not converted"
            )
    return used


def _first_paths(nodes, check_id) -> list[tuple[str, ...] | None]:
    """Each node's first breadth-first path from the root: the path TensorFlow names its
    values by (checkpoint keys) and restores by. None for nodes the root does not reach
    (slot variables)."""
    paths: list[tuple[str, ...] | None] = [None] * len(nodes)
    paths[0] = ()
    queue = deque([0])
    while queue:
        parent = queue.popleft()
        for ref in nodes[parent].children:
            child = check_id(ref.node_id)
            if paths[child] is None:
                paths[child] = paths[parent] + (ref.local_name,)  # type: ignore[operator]
                queue.append(child)
    return paths


def build_object_graph(graph: Graph) -> tuple[bytes, list[tuple[str, Tensor]]]:
    """The serialised object graph for `graph` and its (checkpoint key, tensor) pairs,
    with nodes numbered breadth-first as TensorFlow numbers them."""
    ids: dict[int, int] = {id(graph.root): 0}
    order: list[EdgeTarget] = [graph.root]
    paths: list[tuple[str, ...]] = [()]
    proto = protos.TrackableObjectGraph()
    proto.nodes.add()
    queue: deque[Node] = deque([graph.root])
    while queue:
        node = queue.popleft()
        parent = ids[id(node)]
        for name, child in node.edges.items():
            if name.startswith(ATTRIBUTE_EDGE) and isinstance(child, Tensor):
                continue  # an attribute of `node`, not an object of its own
            if id(child) not in ids:
                ids[id(child)] = len(order)
                order.append(child)
                paths.append(paths[parent] + (name,))
                proto.nodes.add()
                if isinstance(child, Node):
                    queue.append(child)
            proto.nodes[parent].children.add(node_id=ids[id(child)], local_name=name)
    values: list[tuple[str, Tensor]] = []

    def object_path(node_id: int) -> str:
        return "/".join(escape(n) for n in paths[node_id])

    def attribute(node_id: int, name: str, tensor: Tensor, key_path: str) -> None:
        key = f"{key_path}/.ATTRIBUTES/{escape(name)}" if key_path else f".ATTRIBUTES/{name}"
        full_name = tensor.meta.get(VARIABLE_NAME) or "/".join(paths[node_id])
        proto.nodes[node_id].attributes.add(name=name, full_name=full_name, checkpoint_key=key)
        values.append((key, tensor))

    for node_id, item in enumerate(order):
        if isinstance(item, Tensor):
            attribute(node_id, VALUE, item, object_path(node_id))
            continue
        for name, child in item.edges.items():
            if name.startswith(ATTRIBUTE_EDGE) and isinstance(child, Tensor):
                attribute(node_id, name[len(ATTRIBUTE_EDGE) :], child, object_path(node_id))
    for slot in graph.slots:
        var_id, opt_id = ids.get(id(slot.variable)), ids.get(id(slot.optimizer))
        if var_id is None or opt_id is None:
            raise ValueError(f"slot {slot.name!r} hangs on an object outside the graph")
        slot_id = len(proto.nodes)
        proto.nodes.add()
        paths.append(paths[var_id])
        proto.nodes[opt_id].slot_variables.add(
            original_variable_node_id=var_id, slot_name=slot.name, slot_variable_node_id=slot_id
        )
        key_path = (
            f"{object_path(var_id)}/.OPTIMIZER_SLOT/{object_path(opt_id)}/{escape(slot.name)}"
        )
        attribute(slot_id, VALUE, slot.value, key_path)
    _mark_values(proto)
    return proto.SerializeToString(), values


def _mark_values(proto) -> None:
    """`has_checkpoint_values`: whether a node or anything below it holds a value."""
    nodes = proto.nodes
    has = [bool(n.attributes) or bool(n.slot_variables) for n in nodes]
    changed = True
    while changed:  # a fixed point: the graph may share nodes
        changed = False
        for i, node in enumerate(nodes):
            if not has[i] and any(has[ref.node_id] for ref in node.children):
                has[i] = changed = True
    for node, value in zip(nodes, has, strict=True):
        node.has_checkpoint_values.value = value


def read_name_based(reader: BundleReader, graph: Graph, keys: list[str]) -> None:
    """TF1 `Saver` checkpoints: names split on `/`. A key under another tensor's name
    (`dense/kernel/Adam` under `dense/kernel`) is that variable's optimizer slot."""
    tensors = {key: tensor_for(reader, key) for key in keys}
    for key, tensor in tensors.items():
        parent, _, name = key.rpartition("/")
        if parent in tensors:
            graph.slots.append(Slot(tensors[parent], graph.root, name, tensor))
            continue
        try:
            graph.add(tuple(key.split("/")), tensor)
        except ValueError:
            graph.add((key,), tensor)  # a name that clashes with a scope: keep it whole
