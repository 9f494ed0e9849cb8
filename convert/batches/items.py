"""One item of a batch: made from sources or a TOML manifest, checked before anything
runs (options, formats, two items writing one path), and run on its own in a worker (a
process of `workers.py` or a Dask task of `on_dask.py`): a failure is that item's one-line
error in its result, never the end of the batch. Outputs are atomic (`io.outputs`), so an
item killed midway leaves no output under its name, and `resume` runs it again; an item
whose output reads back whole is skipped.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convert.core import registry
from convert.core.errors import ConvertError, FileAccessError

# Convert options an item may carry, as the manifest spells them -> the API's keywords
# (the writer options as the registry's records spell them).
OPTIONS = {
    "to": "to",
    "from": "from_format",
    "overwrite": "overwrite",
    "rules": "rules",
    "reverse": "reverse",
    "like": "like",
    "check": "check",
    **{o.manifest: o.name for o in registry.writer_options().values()},
}
_KEYWORDS = set(OPTIONS.values())


class BatchError(ConvertError):
    """A batch that cannot run as given (a bad manifest, two items writing one path)."""


@dataclass
class Item:
    """One conversion: `src` to `dst` with the API's convert keywords in `options`."""

    src: str
    dst: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ItemResult:
    src: str
    dst: str
    status: str  # ok | failed | skipped
    error: str | None = None
    tensors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    worker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


OnItemDone = Callable[[ItemResult], None]  # called as each item ends


# -- items --------------------------------------------------------------------------------


def items_for(
    sources: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    to: str | None = None,
    **options: Any,
) -> list[Item]:
    """One item per source, each written into `out_dir` under its source's name with the
    target format's extension (`runs/a/ckpt-3` -> `DIR/ckpt-3.safetensors`); the format
    is `to`, else safetensors."""
    fmt = registry.get(to or "safetensors")
    return [
        Item(
            os.fspath(src),
            os.fspath(Path(out_dir) / output_name(src, fmt.name)),
            {**options, "to": fmt.name},
        )
        for src in sources
    ]


def output_name(src: str | os.PathLike, fmt: str) -> str:
    """The source's name without its format's extensions, with the target's."""
    text = os.fspath(src).rstrip("/" + os.sep)
    name = re.sub(r"\.(index|data-\d+-of-\d+)$", "", os.path.basename(text) or text)
    extensions = sorted(
        {e for f in registry.formats().values() for e in f.extensions}, key=len, reverse=True
    )
    for _ in range(2):  # (model.safetensors.index.json: two extensions)
        ext = next((e for e in extensions if name.lower().endswith(e) and len(name) > len(e)), None)
        if ext is None:
            break
        name = name[: -len(ext)]
    suffix = {"tf": "", "sharded": ".safetensors.index.json"}.get(
        fmt, registry.get(fmt).extensions[0]
    )
    return name + suffix


def read_manifest(
    path: str | os.PathLike,
    defaults: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> list[Item]:
    """The `[[convert]]` tables of a TOML manifest. Each has `src`, `dst` (or a top-level
    `out_dir` to name it from) and any convert option; top-level options are every item's
    defaults, and `defaults` (the command line's) come under those; `out_dir` is taken
    where the manifest gives none. Relative paths are taken from the manifest's folder."""
    import tomllib

    path = Path(path)
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as exc:
        raise FileAccessError.from_os_error(exc, path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BatchError(f"is not a TOML manifest: {exc}", path) from None
    entries = table.pop("convert", None)
    if (
        not isinstance(entries, list)
        or not entries
        or not all(isinstance(e, dict) for e in entries)
    ):
        raise BatchError("needs [[convert]] tables, each with src and dst", path)
    base = path.parent
    out_dir = table.pop("out_dir", None) or (os.fspath(out_dir) if out_dir else None)
    common = {**(defaults or {}), **_options(table, path, "the top level")}
    items = []
    for number, entry in enumerate(entries, 1):
        where = f"[[convert]] number {number}"
        entry = dict(entry)
        src, dst = entry.pop("src", None), entry.pop("dst", None)
        if not isinstance(src, str) or not (isinstance(dst, str) or out_dir):
            raise BatchError(f"{where} needs src and dst (strings)", path)
        options = {**common, **_options(entry, path, where)}
        if dst is None:
            assert out_dir is not None  # (an item without dst is refused above but for it)
            fmt = registry.get(options.get("to") or "safetensors")
            dst = os.path.join(out_dir, output_name(src, fmt.name))
            options["to"] = fmt.name
        items.append(Item(_under(base, src), _under(base, dst), options))
    return items


def _under(base: Path, path: str) -> str:
    joined = os.path.join(base, os.path.expanduser(path))
    return joined + "/" if path.endswith("/") and not joined.endswith("/") else joined


def _options(table: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    options = {}
    for name, value in table.items():
        keyword = OPTIONS.get(name.replace("-", "_"))
        if keyword is None:
            raise BatchError(
                f"{where}: unknown option {name!r} (options: {', '.join(OPTIONS)})", path
            )
        option = registry.writer_options().get(keyword)
        if option is not None and option.kind == "size":
            from convert.formats.sharded import parse_size

            try:
                value = parse_size(value)
            except (ValueError, TypeError) as exc:
                raise BatchError(f"{where}: {name}: {exc}", path) from None
        options[keyword] = value
    return options


def check_items(items: list[Item]) -> None:
    """Refuse, before anything runs, options no conversion takes, unknown formats, and
    two items that would write the same path or one that writes another's source."""
    outputs: dict[str, int] = {}
    for number, item in enumerate(items, 1):
        unknown = set(item.options) - _KEYWORDS
        if unknown:
            raise BatchError(
                f"item {number} ({item.src}): unknown option(s) {', '.join(sorted(unknown))}"
            )
        for key in ("to", "from_format"):
            if item.options.get(key):
                registry.get(item.options[key])
        where = _identity(item.dst)
        if where in outputs:
            raise BatchError(
                f"items {outputs[where]} and {number} both write {item.dst}; "
                "give them different outputs"
            )
        outputs[where] = number
    for number, item in enumerate(items, 1):
        if _identity(item.src) in outputs and outputs[_identity(item.src)] != number:
            raise BatchError(
                f"item {outputs[_identity(item.src)]} writes {item.src}, which item {number} reads"
            )


def _identity(path: str) -> str:
    """One spelling per output: absolute, normalised, a TF `.index` named by its prefix."""
    text = os.path.abspath(os.path.expanduser(path))
    return re.sub(r"\.index$", "", text)


def absolute(item: Item) -> Item:
    """`item` with absolute paths, for workers whose working folder may be another."""
    options = dict(item.options)
    if isinstance(options.get("like"), str | os.PathLike):
        options["like"] = os.path.abspath(options["like"])
    rules = options.get("rules")
    if isinstance(rules, str) and os.sep in rules:  # (a rule file, not a built-in name)
        options["rules"] = os.path.abspath(rules)
    dst = os.path.abspath(item.dst) + ("/" if item.dst.endswith("/") else "")
    return Item(os.path.abspath(item.src), dst, options)


# -- running one item (in a worker) ------------------------------------------------------


def run_item(
    item: Item, resume: bool = False, spellings: Mapping[str, str] | None = None
) -> ItemResult:
    """Convert one item; every error is its result (one line), never raised."""
    start = time.perf_counter()
    result = ItemResult(item.src, item.dst, "ok", worker=worker_name())
    try:
        options = dict(item.options)
        if resume:
            if is_complete(item):
                result.status = "skipped"
                return result
            options["overwrite"] = True  # (what is there is an earlier run's, or nothing)
        from convert import api

        report = api.convert(item.src, item.dst, **options)
        result.tensors, result.bytes = report.tensors, report.bytes
    except ConvertError as exc:
        result.status, result.error = "failed", exc.spelled(spellings or {})
    except OSError as exc:
        result.status = "failed"
        result.error = FileAccessError.from_os_error(exc).spelled(spellings or {})
    except Exception as exc:  # a bug must not end the batch: it is this item's failure
        from convert.core.errors import printable

        result.status = "failed"
        result.error = printable(f"{item.src}: internal error: {type(exc).__name__}: {exc}")
    finally:
        result.seconds = round(time.perf_counter() - start, 3)
    return result


def is_complete(item: Item) -> bool:
    """The output of an earlier run reads back whole, in the format asked for (outputs
    appear at once when they are committed: a killed run leaves none)."""
    from convert import api

    if not _output_exists(item.dst):
        return False
    try:
        fmt = api.target_format(item.dst, item.options.get("to"))
        graph = api.load(item.dst.rstrip("/") if item.dst.endswith("/") else item.dst)
        graph.entries()
    except (ConvertError, OSError, ValueError):
        return False
    return graph.format == fmt.name or (fmt.name == "safetensors" and graph.format == "sharded")


def _output_exists(dst: str) -> bool:
    path = Path(dst)
    return path.exists() or Path(f"{dst}.index").exists()


def worker_name() -> str:
    """The Dask worker's address, else this process: `local:PID`."""
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker

            return get_worker().address
        except ValueError:  # (not inside a Dask task)
            pass
    return f"local:{os.getpid()}"


def remove_stale_temporaries(items: list[Item]) -> int:
    """Temporary files a killed run left beside the outputs (`.NAME.<random>.tmp`), before
    the items run again; returns how many. Only names of this batch's outputs."""
    removed = 0
    for item in items:
        path = Path(item.dst.rstrip("/"))
        folder = path if item.dst.endswith("/") else path.parent
        stem = "ckpt" if item.dst.endswith("/") else output_name(path.name, "tf")
        pattern = re.compile(rf"^\.{re.escape(stem)}([.-].*)?\.[A-Za-z0-9_]+\.tmp$")
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if pattern.match(name):
                try:
                    os.unlink(folder / name)
                    removed += 1
                except OSError:
                    pass
    return removed


def settle_format(item: Item) -> Item:
    """A TF-only option on an output whose name says no format means TensorFlow (as for
    `ckpt convert`)."""
    to = registry.format_asked(item.dst, item.options.get("to") or None, item.options)
    if to is not None and not item.options.get("to"):
        return Item(item.src, item.dst, {**item.options, "to": to})
    return item


def to_item(value: Item | Mapping[str, Any]) -> Item:
    if isinstance(value, Item):
        return value
    if isinstance(value, Mapping) and "src" in value and "dst" in value:
        rest = {k: v for k, v in value.items() if k not in ("src", "dst")}
        return Item(os.fspath(value["src"]), os.fspath(value["dst"]), rest)
    raise BatchError(f"an item is an Item or a mapping with src and dst, not {value!r}")
