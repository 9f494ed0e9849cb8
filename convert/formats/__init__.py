"""The formats: one module or package each, with module-level `sniff`, `read` and
`write` (see `convert.core.registry.Format`), declared in the registry's table
(`convert/core/registry.py`). A format reaches another only through the registry."""
