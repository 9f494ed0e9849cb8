"""Rules → plan: the layer between readers and writers that ports weights across frameworks.

    language.py   rule files (TOML): sides, layer rules, path and tensor rules, includes
    patterns.py   path patterns with placeholders, anchored, the same for every separator
    ops/          tensor ops: dtype and shape without data, apply, inverse, exactness
    kinds.py      layer kinds (mappings/kinds.toml) and finding the layers of a graph
    align.py      pairing the source's layers with a skeleton's, by kind and order
    translate.py  running rules over layers and tensors into derived tensors
    derive.py     derived tensors: computed from their sources when a writer reads them
    plan.py       the planned graph and its report (consumed, unused, missing, ...)
    emit.py       the alignment found, written back as an editable rule file

Writers never import this package: a plan reaches them as a graph of lazy tensors.
"""

from .language import RuleError, RuleSet, builtin_names, load
from .plan import CHECKS, Planned, RulesReport, plan

__all__ = ["CHECKS", "Planned", "RuleError", "RuleSet", "RulesReport", "builtin_names", "load",
           "plan"]
