"""Rules → plan: the layer between readers and writers that ports weights across frameworks.

    language.py   rule files (TOML): sides, layer rules, path and tensor rules, includes
    patterns.py   path patterns with placeholders, anchored, the same for every separator
    ops/          tensor ops: dtype and shape without data, apply, inverse, exactness
    kinds.py      layer kinds (mappings/kinds.toml)
    views.py      the layers of a graph (keras_layers.py: Keras 3 groups; named_layers.py:
                  torch, Flax, Keras 2 by names and ranks; a Keras config's classes and
                  how a Dense after a Flatten reads, from `frameworks/keras/config.py`)
    align.py      pairing the source's layers with a skeleton's: rules, names, order, shapes;
                  and each pair's kind (order.py: the order a file gives its layers)
    place.py      placing layers: paired with a skeleton's, or by [[path]] rules alone
    translate.py  running rules over layers and tensors into derived tensors
    derive.py     derived tensors: computed from their sources when a writer reads them
    plan.py       the planned graph and its report (consumed, unused, missing, ...)
    emit.py       the alignment found, written back as an editable rule file

Writers never import this package: a plan reaches them as a graph of lazy tensors.
"""

from convert.core.errors import RuleError
from convert.rules.align import AlignmentError
from convert.rules.language import RuleSet, builtin_names, load
from convert.rules.plan import CHECKS, Planned, RulesReport, plan

__all__ = [
    "CHECKS",
    "AlignmentError",
    "Planned",
    "RuleError",
    "RuleSet",
    "RulesReport",
    "builtin_names",
    "load",
    "plan",
]
