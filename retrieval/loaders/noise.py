"""Library complaints about one file, caught while it is parsed and kept with that file.

BeautifulSoup warns through `warnings` (an XML file read as HTML prints ten lines), pypdf logs
through its logger ("EOF marker not found"). Either is about the file, so it belongs in the
file's skip reason or `SourceFile.warnings`, which the indexer reports once, and not on the
terminal in the middle of a progress bar.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

_MAX_NOTE = 200


class _Collect(logging.Handler):
    def __init__(self, notes: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        library = record.name.split(".")[0]
        self.notes.append(_short(f"{library}: {record.getMessage()}"))


@contextmanager
def captured_noise(library_loggers: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """Collect warnings raised, and WARNING+ records logged by `library_loggers`, inside the
    block into the yielded list (short, one line each, in order, without repeats).

    Not thread-safe (`warnings.catch_warnings` and logger propagation are process-wide); files
    are parsed one at a time.
    """
    notes: list[str] = []
    handler = _Collect(notes)
    loggers = [logging.getLogger(name) for name in library_loggers]
    propagate = [each.propagate for each in loggers]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for each in loggers:
            each.addHandler(handler)
            each.propagate = False
        try:
            yield notes
        finally:
            for each, before in zip(loggers, propagate, strict=True):
                each.removeHandler(handler)
                each.propagate = before
            for warning in caught:
                if issubclass(warning.category, DeprecationWarning | PendingDeprecationWarning):
                    # About the library's code, not the file: for developers only.
                    logger.debug("%s: %s", warning.category.__name__, warning.message)
                    continue
                notes.append(_short(f"{warning.category.__name__}: {warning.message}"))
            unique = list(dict.fromkeys(notes))
            notes[:] = unique


def _short(message: str) -> str:
    """The first line, cut to a length a report line can hold."""
    first = message.strip().split("\n", 1)[0].strip()
    return first if len(first) <= _MAX_NOTE else first[: _MAX_NOTE - 1] + "…"
