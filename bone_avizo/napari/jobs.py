"""Core tasks in a background thread, with the core's progress/cancel protocol, shown in a dock.

:class:`Job` runs ``task(progress)`` in a thread; ``progress`` is the core's callback
(``done, total, message -> stop?``, :mod:`bone_avizo.progress`): it records the latest report and
answers True once Cancel was pressed, so the core raises ``Cancelled`` after discarding its partial
output. :class:`JobPanel` (Qt) shows a Job: a progress bar, the core's message with its ETA, and a
Cancel button; it polls the Job from the GUI thread, so the viewer stays responsive and every
result, error or notification is handled in the GUI thread. Errors of the user's input
(:class:`~bone_avizo.errors.BoneAvizoError`) become one-line notifications with the CLI's text;
anything else one line naming it as an internal error (its traceback goes to the log).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from bone_avizo.errors import BoneAvizoError, Cancelled

log = logging.getLogger(__name__)

POLL_MS = 100


class Job:
    """``task(progress)`` run once in a daemon thread; ``result`` or ``error`` once ``finished``."""

    def __init__(self, task: Callable[[Callable], Any], name: str):
        self.name = name
        self.report = (0, 1, f"{name}: starting")
        self.result: Any = None
        self.error: BaseException | None = None
        self._task = task
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bone_avizo {name}", daemon=True)

    def start(self) -> "Job":
        self._thread.start()
        return self

    def progress(self, done: int, total: int, message: str) -> bool:
        """The core's progress callback: remember the report; True (stop) once cancelled."""
        self.report = (int(done), int(total), str(message))
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.finished

    def _run(self) -> None:
        try:
            self.result = self._task(self.progress)
        except BaseException as exc:  # noqa: BLE001 - handed to the GUI thread, which reports it
            self.error = exc


def _error_text(name: str, exc: BaseException) -> str:
    """One line for a failed task ``name`` (predict, fit, iou): the line the CLI prints for the same error."""
    if isinstance(exc, Cancelled):
        return f"bone-avizo {name}: {exc}"
    if isinstance(exc, BoneAvizoError):
        return f"bone-avizo {name}: error: {exc}"
    return f"bone-avizo {name}: internal error: {type(exc).__name__}: {exc} (the log has the details)"


def _notify_error(name: str, exc: BaseException) -> str:
    """Show ``exc`` as one notification line (never a traceback dialog); returns the line."""
    from napari.utils.notifications import show_error, show_info

    text = _error_text(name, exc)
    if isinstance(exc, Cancelled):
        show_info(text)
    else:
        if not isinstance(exc, BoneAvizoError):
            log.error("%s failed", name, exc_info=exc)
        show_error(text)
    return text


def _percent(done: int, total: int) -> int:
    return int(round(100 * done / max(total, 1)))


class JobPanel:
    """A progress bar, the job's message (with the core's ETA), Run and Cancel buttons; one job at a time.

    ``start(task, on_done)`` runs ``task(progress)`` in a thread and calls ``on_done(result)`` in the
    GUI thread when it succeeds; a failure or cancel is shown as one notification line."""

    def __init__(self, name: str, run_text: str):
        from magicgui import widgets
        from qtpy.QtCore import QTimer

        from bone_avizo.napari.widgets import wrapping

        self.name = name
        self.run_button = widgets.PushButton(text=run_text, name="run")
        self.cancel_button = widgets.PushButton(text="Cancel", name="cancel", enabled=False)
        self.bar = widgets.ProgressBar(value=0, min=0, max=100, name="progress", label="")
        self.status = wrapping(widgets.Label(value="", name="status"))
        self.container = widgets.Container(widgets=[self.run_button, self.cancel_button, self.bar, self.status],
                                           labels=False)
        self.cancel_button.changed.connect(self.cancel)
        self.job: Job | None = None
        self.last_error: str | None = None
        self._on_done: Callable[[Any], None] | None = None
        self._on_failed: Callable[[BaseException], None] | None = None
        self.polled: list[Callable[[], None]] = []  # called at every poll while a job runs (e.g. a live curve)
        self._timer = QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    def start(self, task: Callable[[Callable], Any], on_done: Callable[[Any], None], *,
              on_failed: Callable[[BaseException], None] | None = None) -> Job:
        """Run ``task(progress)``; then ``on_done(result)``, or ``on_failed(error)`` after the error is shown."""
        if self.running:
            raise BoneAvizoError(f"{self.name} is already running; wait for it or press Cancel")
        self.last_error = None
        self._on_done, self._on_failed = on_done, on_failed
        self.job = Job(task, self.name).start()
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.bar.value, self.status.value = 0, f"{self.name}: starting"
        self._timer.start()
        return self.job

    def guard(self, action: Callable[[], Any]) -> Any:
        """Call ``action`` (a widget's Run: check the inputs, then :meth:`start`); an error in the inputs
        becomes one notification line and the panel's status."""
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - a widget's last-resort handler
            self._failed(exc)
            return None

    def _failed(self, exc: BaseException) -> None:
        self.last_error = self.status.value = _notify_error(self.name, exc)

    def cancel(self, *_: Any) -> None:
        if self.running:
            self.job.cancel()
            self.status.value = f"{self.name}: cancelling"

    def poll(self) -> None:
        """Show the job's latest report; finish it once its thread has ended."""
        job = self.job
        if job is None:
            return
        done, total, message = job.report
        self.bar.value = _percent(done, total)
        if not job.cancelled:
            self.status.value = message
        for callback in self.polled:
            callback()
        if job.finished:
            self._finish(job)

    def _finish(self, job: Job) -> None:
        self._timer.stop()
        self.run_button.enabled, self.cancel_button.enabled = True, False
        if job.error is not None:
            self._failed(job.error)
            if self._on_failed is not None:
                self._on_failed(job.error)
            return
        self.bar.value = 100
        self.status.value = f"{self.name}: done"
        if self._on_done is not None:
            try:
                self._on_done(job.result)
            except Exception as exc:  # noqa: BLE001 - e.g. the output file vanished before it was shown
                self._failed(exc)
