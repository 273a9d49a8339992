"""Progress of long steps, reported to whoever listens: the CLI's progress bars, a Prefect
progress artifact. The long-running code calls :func:`advance`; it knows nothing of its audience.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

__all__ = ["Listener", "advance", "counted", "listening", "start"]

#: ``listener(step, completed, total)``: ``total`` is None when unknown.
Listener = Callable[[str, int, int | None], None]

_listeners: list[Listener] = []
_lock = threading.Lock()
_state: dict[str, tuple[int, int | None]] = {}


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def start(step: str, total: int | None = None) -> None:
    """Announce a step (and its size in bytes, when known)."""
    with _lock:
        _state[step] = (0, total)
        listeners = list(_listeners)
    for listener in listeners:
        listener(step, 0, total)


def advance(step: str, amount: int) -> None:
    """Add ``amount`` bytes of progress to ``step``."""
    with _lock:
        done, total = _state.get(step, (0, None))
        done += amount
        _state[step] = (done, total)
        listeners = list(_listeners)
    for listener in listeners:
        listener(step, done, total)


def counted(
    step: str, chunks: Iterable[bytes], total: int | None = None, restart: bool = True
) -> Iterator[bytes]:
    """Pass ``chunks`` through, reporting their bytes as progress of ``step`` (which starts
    afresh unless ``restart`` is false, for several streams adding up to one step)."""
    if restart:
        start(step, total)
    for chunk in chunks:
        advance(step, len(chunk))
        yield chunk
