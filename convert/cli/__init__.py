"""`ckpt`: the command group, one module per command (`ls.py`, `convert.py`, `migrate.py`,
`diff.py`, `batch.py`, `rules.py`, `formats.py`). User errors print one line and exit 2
(`common.py`); each command imports what it needs when it runs, so that `ckpt --version`
and `ckpt --help` stay free of numpy."""

from __future__ import annotations

import gc
import os
import sys

import click

from convert import __version__
from convert.cli import batch, diff, formats, ls, migrate, rules
from convert.cli import convert as conversion

# numpy's OpenBLAS starts a thread per core that spins for about 0.15 s of CPU after numpy
# is imported; no command multiplies matrices, and on two cores that spin takes the core the
# checksum pass runs on. (A library user's process keeps its own setting.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


class _Group(click.Group):
    """Ends quietly when the reader of the output goes away (`ckpt ls BIG | head -1`):
    killed by SIGPIPE, as `ls` is. (Python ignores SIGPIPE and raises BrokenPipeError,
    which click would turn into exit 1; only output to a closed pipe raises it here, after
    any conversion has been committed.)"""

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # (what is still buffered would fail at exit, loudly)
            return result
        except BrokenPipeError:
            _die_of_sigpipe()


def _die_of_sigpipe() -> None:
    import os
    import signal

    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(1)  # (no SIGPIPE on this system: end without flushing into the closed pipe)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, package_name="ckpt-convert")
def main() -> None:
    """List and convert neural-network checkpoints without any framework installed."""
    # A graph is many small long-lived objects and little cyclic garbage: with the default
    # thresholds the collector rescans them over and over (a third of listing 20,000
    # tensors). Collect young objects rarely; the imported modules are never scanned.
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


for _command in (
    ls.ls_command,
    conversion.convert_command,
    migrate.migrate_command,
    diff.diff_command,
    batch.batch_command,
    rules.rules_command,
    formats.formats_command,
):
    main.add_command(_command)
