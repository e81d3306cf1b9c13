"""Finding Avizo's injected names (``hx_project``, ``HxPortIntTextN``, ...) without importing Avizo.

Avizo executes a ``.pyscro`` with its names injected as globals of that file, so the adapter,
which is ordinary imported code, cannot see them directly. Every adapter function that needs one
takes it explicitly (keyword ``hx=`` or the object itself) and otherwise looks it up in the
globals of the module's own class (the ``.pyscro`` namespace), then in ``builtins``.
"""
from __future__ import annotations

import builtins
import inspect
from typing import Any, Mapping

from bone_avizo.errors import BoneAvizoError


class AvizoNameError(BoneAvizoError, NameError):
    """An Avizo global (a port class, hx_project, ...) could not be found."""


def hx_global(module: Any, name: str, hx: Mapping[str, Any] | Any | None = None) -> Any:
    """Return Avizo's global ``name`` as seen by ``module`` (a PyScriptObject instance).

    ``hx`` may be a mapping (e.g. ``globals()`` of the ``.pyscro``) or an object with attributes;
    it takes precedence over the lookup in the module's class namespace and in ``builtins``.
    """
    if hx is not None:
        value = hx.get(name) if isinstance(hx, Mapping) else getattr(hx, name, None)
        if value is not None:
            return value
    for klass in type(module).__mro__:
        for attribute in vars(klass).values():
            namespace = getattr(inspect.unwrap(attribute), "__globals__", None) if callable(attribute) else None
            if namespace is not None and name in namespace:
                return namespace[name]
    if hasattr(builtins, name):
        return getattr(builtins, name)
    raise AvizoNameError(f"Avizo's {name} is not visible from {type(module).__name__}; run inside Avizo, "
                         f"or pass hx=globals() from the .pyscro")


def module_title(module: Any) -> str:
    """The name shown for ``module`` in messages (its project name, else its class name)."""
    return str(getattr(module, "name", None) or type(module).__name__)
