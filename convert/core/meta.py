"""The keys of a graph's dicts, one constant each, with who writes it → who reads it.

`Tensor.meta` and `Node.meta` hold format facts: what a format knows beyond the values (the
source key, a TF full name, Keras weight order, a torch container kind), so that a round
trip through the same format gives the same file back and writers can lay a graph out as
its source did. `Graph.values` and `Node.values` hold values: what the file itself holds
besides tensors (a Keras config, an epoch), by the name the file gives them.

Above each key: what it holds, then its writers → its readers, by module, relative to
`convert` (and a format's own modules to `convert.formats`: `keras.v3_reader`, `torch.tree`;
`keras.*_reader` is both Keras readers). "→ (none)": no module reads it, it is kept for the
record (the API's user, the tests). Most strings go into nothing but the graph; some are
written into files (`TF1_NAMES`, `SAFETENSORS_FORMAT`) or are the names a file gives a value
(the Keras values): never change one.

Not here:
- keys only one format's own modules write and read, kept beside that format: npz's
  `NPZ_DESCR`, `FORTRAN_ORDER` (`formats/npz/__init__.py`) and Flax msgpack's `META_ARRAY`,
  `META_ORDER`, `META_INT_KEYS`, `META_EXT`, `META_CHUNKS` (`formats/flax/layout.py`);
- values a reader keeps under the file's own names (a torch checkpoint's `epoch`, a bare
  object's `value`, a safetensors `__metadata__` entry, a Flax tree's scalars): no module
  but that reader names them.
"""

# -- Tensor.meta: facts about one tensor --------------------------------------------------

# The source file's own key: every format's reader, porting → core.tensor, rules.derive,
# rules.plan, compare, cli.ls
SOURCE_KEY = "key"
# The path its format names it by, made `Entry.path`: tf.objects, passes.migrate → core.graph
PRIMARY_PATH = "primary_path"
# The variable's own name (TF `full_name`, `.h5` weight name without `:0`; TF1 keys):
# tf.objects, keras.legacy_reader, frameworks.tf1_names, passes.migrate → tf.objects,
# keras.tfgraph, frameworks.tf1_names, rules.named_layers, passes.optimizers
VARIABLE_NAME = "tf_full_name"

# A Hugging Face TF weight's name below the model's own scope, where a file keeps only that
# (a TF-format safetensors key without `:0`: `bert/pooler/dense/kernel`; its full name,
# `tf_bert_model/bert/...`, is unknown): safetensors → rules.spelling
TF_NAME_BELOW_MODEL = "tf_name_below_model"

# Keras 2 identities (a `.h5`'s own, or from a `.keras` archive's config):
# Its layer's name (also on the layer's Node): keras.*_reader → keras.legacy_writer,
# passes.keras_objects
KERAS_LAYER = "keras_layer"
# Its layer's index among those with weights (also on the Node): keras.*_reader →
# keras.legacy_writer, rules.keras_layers
KERAS_LAYER_INDEX = "keras_layer_index"
# Its index in its layer's `weight_names`: keras.*_reader → keras.legacy_writer,
# rules.keras_layers, passes.keras_objects
KERAS_WEIGHT_INDEX = "keras_weight_index"
# Its `.h5` weight name (`dense/kernel:0`): keras.*_reader → keras.legacy_writer,
# rules.named_layers, passes.keras_objects
KERAS_WEIGHT_NAME = "keras_weight_name"
# The other layers that save this variable too, as [layer, index in its weight_names]
# (a masked-LM head keeps the word embeddings it decodes with): keras.legacy_reader →
# keras.legacy_writer
KERAS_ALSO_IN = "keras_also_in"
# A Keras optimizer's (also its Node): keras.*_reader → keras.legacy_writer,
# keras.v3_writer, rules.keras_layers, rules.named_layers, passes.keras_objects
KERAS_OPTIMIZER = "keras_optimizer"
# Keras 3 identities (a `.weights.h5`'s own, or a `.h5` weight's from its model config):
# Its object path (`layers/dense/vars/0`): keras.*_reader → keras.v3_writer,
# keras.legacy_writer
KERAS3_KEY = "keras3_key"
# A Keras 3 optimizer's variable: keras.v3_reader → keras.legacy_writer
KERAS3_OPTIMIZER = "keras3_optimizer"
# The object path owning its `vars` group: keras.v3_reader → (none)
KERAS_OBJECT = "keras_object"
# Its index in that `vars` group: keras.v3_reader → (none)
KERAS_VAR_INDEX = "keras_var_index"
# The shard file it was read from: keras.v3_reader → (none)
SHARD = "shard"

# What the rules made a tensor of:
# The start of every key below: rules.plan copies those keys onto a skeleton's tensor
RULE_PREFIX = "rule_"
# The source keys it comes from: rules.derive, rules.plan → rules.derive, rules.plan
RULE_SOURCES = "rule_sources"
# What was done to them: rules.derive → rules.derive, rules.plan
RULE_OPS = "rule_ops"
# Whether the value is exact: rules.derive → rules.derive, rules.plan
RULE_EXACT = "rule_exact"
# A source tensor's path, where it has no key: rules.plan → rules.plan, rules.derive
RULE_KEY = "rule_key"
# (source Tensor, axes): `source` with its axes permuted (rules/derive.py): rules.derive →
# rules.derive, rules.plan, torch.pickler
VIEW_OF = "view_of"

# A tensor as `torch.save` pickled it:
# Its storage record's name: torch.storage → (none)
TORCH_STORAGE = "torch.storage"
# An `nn.Parameter`: torch.storage → torch.pickler
TORCH_PARAMETER = "torch.parameter"
# The Parameter's `requires_grad`: torch.storage → torch.pickler
TORCH_REQUIRES_GRAD = "torch.requires_grad"

# -- Node.meta: facts about an object (most on the root) ----------------------------------

# How a TF checkpoint is keyed, "names" (TF1) or "object" (an object graph): tf,
# frameworks.tf1_names, rules.plan, passes.keras_objects, passes.migrate, sharded → tf,
# keras.tfgraph, frameworks.tf1_names, rules.views, passes.migrate, sharded, api
TF_LAYOUT = "tf_layout"
# The framework whose names and layouts a file holds, where its format serves several (the
# root's; a safetensors file's `__metadata__` `format: tf`): safetensors, sharded → rules.plan,
# folders
SAVED_BY = "saved_by"
# The sub-graph a conversion keeps when no `--pick` is given (the root's; a DeepSpeed
# checkpoint's `model`, its fp32 master weights, beside the module's own): deepspeed → api
DEFAULT_PICK = "default_pick"
# An object's TF registered saver: tf.objects → tf.objects
TF_REGISTERED_SAVER = "tf_registered_saver"
# The root's: every such object's path → its saver: tf.objects → (none)
TF_REGISTERED_SAVERS = "tf_registered_savers"

# The root's `.h5` `layer_names`, in order: keras.*_reader → keras.legacy_writer,
# passes.keras_objects
KERAS_LAYER_NAMES = "keras_layer_names"
# A layer's position in `layer_names`: keras.legacy_reader → (none)
KERAS_LAYER_POSITION = "keras_layer_position"
# The root's: whether the `.h5` is a full-model file: keras.legacy_reader → (none)
KERAS_H5_FULL_MODEL = "keras_h5_full_model"
# The root's: why a `.h5`'s weights have no Keras 3 path: keras.legacy_reader →
# keras.v3_writer
KERAS3_UNMAPPED = "keras3_unmapped"
# The root's: why an archive's weights have no Keras 2 identity: keras.v3_reader →
# keras.legacy_writer
KERAS_LEGACY_UNMAPPED = "keras_legacy_unmapped"
# The root's: an archive's `assets/` members: keras.v3_reader → keras.v3_writer
KERAS_ASSETS = "keras_assets"
# A Keras 3 `vars` Node's: its group's `name` attribute: keras.v3_reader → keras.v3_reader,
# keras.v3_writer
VARS_NAME = "name"

# The container a Node was, "OrderedDict" | "dict" | "list" | "tuple" | "value":
# torch.tree → torch.tree
TORCH_CONTAINER = "torch.container"
# Its original keys, in order (ints stay ints): torch.tree → torch.tree
TORCH_KEYS = "torch.keys"
# An OrderedDict's BUILD state (`_metadata`, TF1_NAMES): torch.tree → torch.tree, torch
TORCH_ATTRIBUTES = "torch.attributes"
# The root's, "zip" | "legacy": torch.zipreader, torch.legacy → (none)
TORCH_FORMAT = "torch.format"
# The root's: the zip archive's top folder: torch.zipreader → (none)
TORCH_ARCHIVE = "torch.archive"

# The root's: the index file's name: sharded → (none)
SHARDED_INDEX = "sharded.index"

# -- Graph.values: what a file holds besides tensors, by the name it gives them -----------

# A Keras 2 `.h5`'s attributes of those names (written back as such):
# keras.legacy_reader → keras.legacy_writer, rules.views, passes.keras_objects
MODEL_CONFIG = "model_config"
# keras.legacy_reader → keras.legacy_writer
TRAINING_CONFIG = "training_config"
# (also a `.keras` archive's, from metadata.json): keras.*_reader → keras.legacy_writer,
# keras.v3_writer
KERAS_VERSION = "keras_version"
# keras.legacy_reader → keras.legacy_writer
BACKEND = "backend"
# A `.keras` archive's JSON members (written back as such):
# config.json: keras.v3_reader → keras.v3_writer, rules.keras_layers, rules.plan
KERAS_CONFIG = "keras_config"
# metadata.json: keras.v3_reader → keras.v3_writer
KERAS_METADATA = "keras_metadata"
# A sharded index's total bytes (each writer of an index counts its own): keras.v3_reader →
# sharded (leaves a safetensors or torch index's out)
TOTAL_SIZE = "total_size"
# safetensors' marker in `__metadata__` ("pt": written there), not the model's:
# safetensors → torch.tree
SAFETENSORS_FORMAT = "format"

# -- Kept in a file beside the tensors, never in the graph ----------------------------------

# A name-based graph's TF1 names (frameworks/tf1_names.py), in safetensors' `__metadata__`
# and a torch state dict's attributes: safetensors, torch.tree, torch → safetensors, torch
TF1_NAMES = "tf1_names"
