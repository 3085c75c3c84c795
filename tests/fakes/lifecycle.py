"""What every fake server shares: `with Fake() as fake:` starts it and always stops it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class BackgroundServer:
    """Subclasses implement `start() -> Self` (idempotent) and `stop()`."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
