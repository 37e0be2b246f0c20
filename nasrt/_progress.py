"""Progress bars: tqdm when installed (the runtime side must work without it)."""
from __future__ import annotations

import sys


class _NoBar:
    """Stands in for a tqdm bar: iterates, ignores the rest."""

    def __init__(self, iterable):
        self._it = iterable

    def __iter__(self):
        return iter(self._it)

    def set_postfix(self, *args, **kwargs):
        pass

    def update(self, n=1):
        pass

    def close(self):
        pass


def progress(iterable, total: int, desc: str, enabled: bool):
    """A tqdm bar on a terminal; none when stderr is not a terminal (a log file
    gets the one line per epoch that the loops print, not a flood of bar redraws)."""
    if not sys.stderr.isatty():
        return _NoBar(iterable)
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True,
                file=sys.stderr)
