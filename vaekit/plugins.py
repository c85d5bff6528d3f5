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

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

import pluggy

from vaekit import hookspecs
from vaekit.errors import PluginError, one_line

DEFAULT_PLUGINS = (
    "vaekit.default_plugins.conv2",
    "vaekit.default_plugins.resconv",
    "vaekit.default_plugins.dense",
    "vaekit.default_plugins.losses",
    "vaekit.default_plugins.griffinlim",
    "vaekit.default_plugins.fastgl",
    "vaekit.default_plugins.datasets",
    "vaekit.default_plugins.discriminators",
    "vaekit.default_plugins.metrics",
)

ENTRY_POINT_GROUP = "vaekit"

_pm: PluginManager | None = None
#: plugin name → (distribution name, version), for plugins loaded from entry points.
_DISTRIBUTIONS: dict[str, tuple[str, str]] = {}
#: The argument every hook takes (see :mod:`vaekit.hookspecs`).
HOOK_ARGS = ("register",)


def hook_names() -> list[str]:
    """The names of the hooks a plugin can implement."""
    return sorted(n for n in dir(hookspecs) if n.startswith("register_"))


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, checking each plugin first so a mistake names the plugin and what to fix.

    ``register(obj, name)`` raises :class:`PluginError` for a hook with an unknown name, a hook
    with other arguments than ``(register)``, a hook function missing ``@vaekit.hookimpl``, a
    plugin without any hook, or a plugin name that is taken.
    """

    def register(self, plugin, name=None, *, where=None):  # noqa: D102 (pluggy's signature + where)
        where = where or f"plugin {name or getattr(plugin, '__name__', type(plugin).__name__)}"
        check_plugin(plugin, where)
        if self.is_registered(plugin):
            raise PluginError(f"{where}: this object is registered already, as {self.get_name(plugin)!r}")
        if name is not None and self.has_plugin(name):
            other = self.get_plugin(name)
            raise PluginError(f"{where}: the plugin name {name!r} is taken (by {_describe(other)}); give it another name")
        try:
            return super().register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:  # anything the checks did not foresee
            raise PluginError(f"{where}: {str(exc).splitlines()[0]}") from None


def _describe(plugin) -> str:
    file = getattr(plugin, "__vaekit_plugin_file__", None)
    return file or getattr(plugin, "__name__", None) or f"a {type(plugin).__name__} object"


def check_plugin(plugin, where: str) -> None:
    """Raise :class:`PluginError` unless ``plugin``'s hooks match :mod:`vaekit.hookspecs`."""
    known = hook_names()
    found = 0
    for attr in dir(plugin):
        if attr.startswith("__"):
            continue
        try:
            obj = getattr(plugin, attr)
        except Exception:  # a property that raises is not a hook
            continue
        opts = getattr(obj, "vaekit_impl", None)
        if not isinstance(opts, dict):
            if attr in known and callable(obj):
                raise PluginError(f"{where}: function {attr} is not marked as a hook; put @vaekit.hookimpl above it")
            continue
        hook = opts.get("specname") or attr
        if hook not in known:
            near = difflib.get_close_matches(hook, known, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise PluginError(f"{where}: unknown hook {hook!r}; {hint}the hooks are: {', '.join(known)}")
        try:
            args = tuple(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            args = HOOK_ARGS
        if args != HOOK_ARGS:
            raise PluginError(
                f"{where}: hook {hook}({', '.join(args)}) has the wrong arguments; "
                f"write it as def {hook}(register): and call register(name, build) inside"
            )
        found += 1
    if not found:
        raise PluginError(
            f"{where}: defines no hooks; mark each hook function with @vaekit.hookimpl "
            f"(the hooks are: {', '.join(known)})"
        )


def _make_manager() -> PluginManager:
    pm = PluginManager("vaekit")
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, module_name, where=f"built-in plugin {module_name}")
    if not os.environ.get("VAEKIT_NO_ENTRY_POINTS"):
        _load_entry_points(pm)
    for path in filter(None, os.environ.get("VAEKIT_PLUGINS", "").split(os.pathsep)):
        _load_file(pm, path, source="VAEKIT_PLUGINS")
    return pm


def _load_entry_points(pm: PluginManager) -> None:
    from importlib.metadata import distributions

    for dist in distributions():
        dist_name = dist.metadata["Name"]
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP:
                continue
            where = f"plugin {ep.name!r} (entry point {ep.value} of distribution {dist_name} {dist.version})"
            if pm.get_plugin(ep.name) is not None:
                # The same distribution found twice on sys.path is harmless; two distributions are not.
                other = _DISTRIBUTIONS.get(ep.name, (ep.name, ""))[0]
                if other != dist_name:
                    raise PluginError(
                        f"{where}: the name {ep.name!r} in entry point group {ENTRY_POINT_GROUP!r} is taken "
                        f"by {other}; uninstall one of them or rename its entry point"
                    )
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken installed plugin must say which one
                raise PluginError(
                    f"{where}: cannot import it: {_exception_line(exc)}; fix or uninstall {dist_name}"
                ) from None
            pm.register(plugin, ep.name, where=where)
            _DISTRIBUTIONS[ep.name] = (dist_name, dist.version)


def _exception_line(exc: BaseException, path: str | None = None) -> str:
    """``Type: message``, with the line of ``path`` where it was raised when there is one."""
    line = None
    tb = exc.__traceback__
    while path and tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{one_line(exc)} (line {line})" if line else one_line(exc)


def _load_file(pm: PluginManager, path: str | os.PathLike, source: str = "--plugin") -> object:
    path = Path(path).expanduser()
    where = f"{source} {path}"
    if not path.is_file():
        why = "is a directory, not a .py file" if path.is_dir() else "no such file"
        raise PluginError(f"{where}: {why}")
    resolved = str(path.resolve())
    existing = pm.get_plugin(resolved)
    if existing is not None:
        return existing
    code = path.read_bytes()
    digest = hashlib.sha256(code).hexdigest()
    # A stable module name per path, so logs and pickles say which file a class came from.
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    module_name = f"vaekit_plugin_file_{stem}_{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise PluginError(f"{where}: not a Python file (name it something.py)")
    module = importlib.util.module_from_spec(spec)
    module.__vaekit_plugin_file__ = resolved
    module.__vaekit_plugin_sha256__ = digest
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise PluginError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise PluginError(f"{where}: fails on import: {_exception_line(exc, resolved)}") from None
    try:
        pm.register(module, resolved, where=where)
    except PluginError:
        sys.modules.pop(module_name, None)
        raise
    return module


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm
    if _pm is None:
        _pm = _make_manager()
    return _pm


def load_plugin_file(path: str | os.PathLike, source: str = "--plugin") -> object:
    """Import a one-off plugin file and register it (idempotent for the same path).

    ``source`` says where the path came from, for error messages (``--plugin``, a run's tag…).
    """
    return _load_file(get_plugin_manager(), path, source=source)


def plugin_files() -> list[str]:
    """Absolute paths of the one-off plugin files loaded in this process, in load order.

    A run records them in its ``vaekit.plugin_files`` tag (a JSON list) so that a later
    process (``generate``, a sweep's workers) can load them again with :func:`load_plugin_file`.
    """
    return [f for _, p in get_plugin_manager().list_name_plugin()
            if (f := getattr(p, "__vaekit_plugin_file__", None))]


def recorded_plugin_files(tags: dict) -> list[str]:
    """The plugin files a run recorded in its ``vaekit.plugin_files`` tag (a JSON list); nothing is loaded."""
    import json

    try:
        files = json.loads(tags.get("vaekit.plugin_files") or "[]")
    except ValueError:
        return []
    return [str(f) for f in files] if isinstance(files, list) else []


def unloaded_plugin_files(tags: dict) -> list[str]:
    """The files a run recorded that this process has not loaded (by path)."""
    loaded = {str(Path(f).resolve()) for f in plugin_files()}
    return [f for f in recorded_plugin_files(tags) if str(Path(f).resolve()) not in loaded]


def announce_plugin_files(paths) -> None:
    """Say on stderr, before importing them, which plugin files of a run are imported."""
    print(f"importing the run's plugin files (--trust-run-plugins): {', '.join(paths)}", file=sys.stderr)


def load_run_plugin_files(tags: dict, announce=announce_plugin_files) -> list[str]:
    """Import the plugin files a run recorded, after ``announce(paths)`` has shown the user which ones.

    Only for an explicit opt-in (``--trust-run-plugins``): a run's tags and artifacts can be written by
    anyone with access to its store, so its files are never imported implicitly.  Files already
    loaded (``--plugin``) are skipped; a recorded file that no longer exists is a
    :class:`PluginError` saying what to do.
    """
    todo = unloaded_plugin_files(tags)
    missing = [f for f in todo if not Path(f).is_file()]
    if missing:
        raise PluginError(
            f"plugin file {missing[0]} (recorded in the run's tag vaekit.plugin_files): no such file; "
            "put it back, or load its new copy with --plugin FILE.py"
        )
    if todo:
        announce(todo)
    for path in todo:
        load_plugin_file(path, source="plugin file recorded in the run's tag vaekit.plugin_files:")
    return todo


def plugin_hint(tags: dict) -> str:
    """Why a component of a run may be missing: the run's plugin files this process did not load ("" if none)."""
    todo = unloaded_plugin_files(tags)
    if not todo:
        return ""
    return (f" (the run used plugin file{'s' * (len(todo) > 1)} {', '.join(todo)}, not loaded: name "
            f"{'them' if len(todo) > 1 else 'it'} with --plugin FILE.py, or pass --trust-run-plugins to import "
            "the recorded paths)")


def reset_plugin_manager() -> None:
    """Forget the plugin manager (tests use this to start clean)."""
    global _pm
    _pm = None
    _DISTRIBUTIONS.clear()


def plugin_origin(plugin: object) -> tuple[str, str]:
    """(name, version) of the plugin: a distribution, a built-in module or a file.

    A file's version is its ``__version__`` if it sets one, else ``sha256:`` and the first 12
    hex digits of its content, so a run's params tell which edit of the file it used.
    """
    pm = get_plugin_manager()
    name = pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))
    if name in _DISTRIBUTIONS:
        return _DISTRIBUTIONS[name]
    file = getattr(plugin, "__vaekit_plugin_file__", None)
    if file:
        version = getattr(plugin, "__version__", None)
        return file, str(version) if version else f"sha256:{plugin.__vaekit_plugin_sha256__[:12]}"
    if name.startswith("vaekit."):
        from vaekit import __version__

        return name, __version__
    return name, str(getattr(plugin, "__version__", "unknown"))
