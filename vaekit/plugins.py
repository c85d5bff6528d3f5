"""The plugin manager: built-in plugins, installed packages, one-off files.

Plugins come from three places, and from nowhere else (nothing is imported from the
working directory implicitly):

1. the built-ins listed in :data:`DEFAULT_PLUGINS`;
2. installed distributions with an entry point in the ``vaekit`` group;
3. files named explicitly, with ``--plugin PATH`` or the ``VAEKIT_PLUGINS`` variable
   (paths separated by ``os.pathsep``), loaded by :func:`load_plugin_file`.

Python code can also call ``get_plugin_manager().register(obj, name)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pluggy

from vaekit import hookspecs
from vaekit.errors import PluginError

DEFAULT_PLUGINS = (
    "vaekit.default_plugins.conv2",
    "vaekit.default_plugins.dense",
    "vaekit.default_plugins.losses",
    "vaekit.default_plugins.griffinlim",
    "vaekit.default_plugins.fastgl",
    "vaekit.default_plugins.datasets",
)

ENTRY_POINT_GROUP = "vaekit"

_pm: pluggy.PluginManager | None = None
#: plugin name → (distribution name, version), for plugins loaded from entry points.
_DISTRIBUTIONS: dict[str, tuple[str, str]] = {}


def _validated_register(pm: pluggy.PluginManager, plugin, name: str, where: str) -> None:
    """Register ``plugin`` and check it against the hook specs, naming ``where`` on error."""
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        raise PluginError(f"{where}: {_explain_validation(exc)}") from None
    except ValueError as exc:  # already registered under that name
        raise PluginError(f"{where}: {exc}") from None


def _explain_validation(exc: pluggy.PluginValidationError) -> str:
    text = str(exc).splitlines()[0]
    if "unknown hook" in text:
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
        return f"{text}; the hooks are: {known}"
    return text


def _make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("vaekit")
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        _validated_register(pm, module, module_name, f"built-in plugin {module_name}")
    if not os.environ.get("VAEKIT_NO_ENTRY_POINTS"):
        _load_entry_points(pm)
    for path in filter(None, os.environ.get("VAEKIT_PLUGINS", "").split(os.pathsep)):
        _load_file(pm, path)
    return pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    from importlib.metadata import distributions

    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or pm.get_plugin(ep.name) is not None:
                continue
            where = f"plugin {ep.name!r} from distribution {dist.metadata['Name']}"
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken installed plugin must say which one
                raise PluginError(f"{where}: cannot import {ep.value}: {type(exc).__name__}: {exc}") from None
            _validated_register(pm, plugin, ep.name, where)
            _DISTRIBUTIONS[ep.name] = (dist.metadata["Name"], dist.version)


def _load_file(pm: pluggy.PluginManager, path: str | os.PathLike) -> object:
    path = Path(path)
    where = f"plugin file {path}"
    if not path.is_file():
        raise PluginError(f"{where}: no such file")
    resolved = str(path.resolve())
    existing = pm.get_plugin(resolved)
    if existing is not None:
        return existing
    module_name = f"vaekit_plugin_file_{abs(hash(resolved)):x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{where}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    module.__vaekit_plugin_file__ = resolved
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise PluginError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise PluginError(f"{where}: fails on import: {type(exc).__name__}: {exc}") from None
    _validated_register(pm, module, resolved, where)
    return module


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm
    if _pm is None:
        _pm = _make_manager()
    return _pm


def load_plugin_file(path: str | os.PathLike) -> object:
    """Import a one-off plugin file and register it (idempotent for the same path)."""
    return _load_file(get_plugin_manager(), path)


def reset_plugin_manager() -> None:
    """Forget the plugin manager (tests use this to start clean)."""
    global _pm
    _pm = None


def plugin_origin(plugin: object) -> tuple[str, str]:
    """(name, version) of the plugin: a distribution, a built-in module or a file."""
    pm = get_plugin_manager()
    name = pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))
    if name in _DISTRIBUTIONS:
        return _DISTRIBUTIONS[name]
    file = getattr(plugin, "__vaekit_plugin_file__", None)
    if file:
        return file, "file"
    if name.startswith("vaekit."):
        from vaekit import __version__

        return name, __version__
    return name, getattr(plugin, "__version__", "unknown")
