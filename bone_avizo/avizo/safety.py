"""Running core work from a scripted module without ever letting an exception reach Avizo."""
from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

from bone_avizo.avizo.hx import AvizoNameError, hx_global, module_title
from bone_avizo.errors import BoneAvizoError, Cancelled

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_MESSAGE = 600


def run_safely(module: Any, fn: Callable[[], T], *, hx: Any = None) -> T | None:
    """Return ``fn()``; on any error show one line in Avizo and return None.

    - :class:`~bone_avizo.errors.Cancelled` -> ``hx_message.warning`` (the user asked for it);
    - other :class:`~bone_avizo.errors.BoneAvizoError` -> ``hx_message.error`` with its message;
    - anything else -> ``hx_message.error`` with the exception type and message, and the
      traceback logged (Avizo's console shows it).

    Objects added to the project during a failed call (half-made outputs) are removed.
    """
    project = _optional(module, "hx_project", hx)
    before = _snapshot(project)
    try:
        return fn()
    except GeneratorExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - nothing may escape into Avizo
        level, text = _describe(module, exc)
        _remove_new_objects(project, before)
        _show(module, hx, level, text)
        return None


def _describe(module: Any, exc: BaseException) -> tuple[str, str]:
    title = module_title(module)
    if isinstance(exc, (Cancelled, KeyboardInterrupt)):
        return "warning", f"{title}: {exc or 'cancelled'}"
    if isinstance(exc, BoneAvizoError):
        return "error", f"{title}: {exc}"
    log.error("%s failed", title, exc_info=exc)
    return "error", (f"{title}: internal error: {type(exc).__name__}: {exc} "
                     "(the traceback is in the Python console)")


def _show(module: Any, hx: Any, level: str, text: str) -> None:
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE - 3] + "..."
    messages = _optional(module, "hx_message", hx)
    if messages is None:
        log.error("%s", text)
        return
    try:
        getattr(messages, level)(text)
    except Exception:  # noqa: BLE001 - the message box itself failed; the log still has it
        log.error("%s", text)


def _optional(module: Any, name: str, hx: Any) -> Any:
    try:
        return hx_global(module, name, hx)
    except AvizoNameError:
        return None


def _snapshot(project: Any) -> dict[int, Any]:
    if project is None:
        return {}
    return {id(obj): obj for obj in project.objects.values()}


def _remove_new_objects(project: Any, before: dict[int, Any]) -> None:
    if project is None:
        return
    for obj in list(project.objects.values()):
        if id(obj) not in before:
            try:
                project.remove(obj)
            except Exception:  # noqa: BLE001 - keep cleaning up
                log.warning("could not remove %s from the project", getattr(obj, "name", obj))
