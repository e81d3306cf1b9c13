"""The core's progress protocol (``callback(done, total, message) -> stop?``) over Avizo's ``hx_progress``.

Use it as a context manager around the core call so that Avizo's progress bar closes::

    with avizo_progress(self) as progress:
        predict_volume(volume, model, config, progress=progress)

Each phase of the core (a new ``total``, or ``done`` going back) opens a fresh bar; a bar has at
most ``max_steps`` steps however large ``total`` is. The callback returns True -- "stop" -- once
the user presses Avizo's Stop button (``interrupted``); the core then raises ``Cancelled``.
"""
from __future__ import annotations

from typing import Any

from bone_avizo.avizo.hx import hx_global


class AvizoProgress:
    """A :data:`~bone_avizo.progress.ProgressCallback` drawing on ``hx_progress``."""

    def __init__(self, hx_progress: Any, *, max_steps: int = 1000):
        self._hx_progress = hx_progress
        self._max_steps = max(int(max_steps), 1)
        self._context: Any = None  # Avizo's progress context and bar, once opened
        self._bar: Any = None
        self._total = self._steps = self._step = self._done = 0
        self._message = ""

    def __call__(self, done: int, total: int, message: str) -> bool:
        total = max(int(total), 1)
        done = min(max(int(done), 0), total)
        if self._bar is None or total != self._total or done < self._done:
            self._open(total, message)
        target = done * self._steps // total
        while self._step < target:
            self._bar.increase_progress_step()
            self._step += 1
        self._done = done
        if message != self._message:
            self._message = message
            set_text = getattr(self._hx_progress, "set_text", None)
            if set_text is not None:
                set_text(message)
        return bool(self._bar.interrupted)

    def _open(self, total: int, message: str) -> None:
        self.close()
        self._total, self._steps = total, min(total, self._max_steps)
        self._step = self._done = 0
        self._message = message
        self._context = self._hx_progress.progress(self._steps, message)
        self._bar = self._context.__enter__()

    def close(self) -> None:
        """Close the current bar (idempotent)."""
        if self._context is not None:
            context, self._context, self._bar = self._context, None, None
            context.__exit__(None, None, None)

    def __enter__(self) -> "AvizoProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def avizo_progress(module: Any, *, hx: Any = None, max_steps: int = 1000) -> AvizoProgress:
    """An :class:`AvizoProgress` over the ``hx_progress`` visible from ``module``."""
    return AvizoProgress(hx_global(module, "hx_progress", hx), max_steps=max_steps)
