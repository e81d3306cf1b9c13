"""Running core work from a scripted module without ever letting an exception reach Avizo."""
from __future__ import annotations

import logging
from contextvars import ContextVar
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

    When it fails, the objects this call created are removed: those recorded by
    :func:`note_created` and those whose names are new since the call began, but never an object
    that existed before (one the call renamed, :func:`note_renamed`, is kept). Objects are tracked by
    name, never by Python identity (``id()``, ``is``): Avizo may hand out a new wrapper for the same
    object on every access.
    """
    project = _optional(module, "hx_project", hx)
    before = set(_object_names(project))
    created = _Ledger()
    token = _CREATED.set(created)
    try:
        result = fn()
    except GeneratorExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - nothing may escape into Avizo
        level, text = _describe(module, exc)
        _remove_created(project, created, before)
        _show(module, hx, level, text)
        return None
    finally:
        _CREATED.reset(token)
    _pass_up(created)
    return result


class _Ledger(list):
    """Names of the objects a run_safely call created; ``kept``: names of older objects it renamed."""

    def __init__(self):
        super().__init__()
        self.kept: set[str] = set()


# the ledger of the innermost run_safely call under way
_CREATED: ContextVar[_Ledger | None] = ContextVar("bone_avizo_created_objects", default=None)


def note_created(obj: Any) -> None:
    """Record that the running module call created ``obj`` (call it once the object has its final name)."""
    created = _CREATED.get()
    if created is not None:
        created.append(str(obj.name))


def note_renamed(old: str, new: str) -> None:
    """Record a rename by the running call: a created object keeps its record, an older one is kept."""
    created = _CREATED.get()
    if created is None:
        return
    if old in created:
        created[created.index(old)] = str(new)
    else:
        created.kept.add(str(new))


def _pass_up(created: _Ledger) -> None:
    """A nested call that succeeded: its records belong to the enclosing call too."""
    outer = _CREATED.get()
    if outer is not None:
        outer.extend(created)
        outer.kept |= created.kept


def _object_names(project: Any) -> list[str]:
    """The names of the objects in ``project`` ([] when it cannot be read)."""
    if project is None:
        return []
    try:
        objects = project.objects
        return [str(obj.name) for obj in (objects.values() if hasattr(objects, "values") else objects)]
    except Exception:  # noqa: BLE001 - an unreadable project: rely on the ledger alone
        return []


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


def find_object(project: Any, name: str) -> Any:
    """The object named ``name`` in ``project``, or None (looked up by name, never by identity)."""
    try:
        return project.get(name)
    except Exception:  # noqa: BLE001 - KeyError in the fake; whatever a real Avizo raises for a missing name
        pass
    try:
        return next((obj for obj in project.objects.values() if str(obj.name) == name), None)
    except Exception:  # noqa: BLE001
        return None


def remove_named(project: Any, name: str) -> None:
    """Remove the object named ``name`` from ``project`` when it is there; failures are logged."""
    obj = find_object(project, name) if project is not None else None
    if obj is None:
        return
    try:
        project.remove(obj)
    except Exception as exc:  # noqa: BLE001 - keep cleaning up
        log.warning("could not remove %s from the project (%s)", name, exc)


def _remove_created(project: Any, created: _Ledger, before: set[str]) -> None:
    appeared = [name for name in _object_names(project) if name not in before and name not in created]
    for name in [*reversed(created), *appeared]:
        if name not in created.kept:
            remove_named(project, name)
