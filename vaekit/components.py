"""Components: what plugins register, looked up by kind and name, built with checked options.

The five kinds and the contract of each ``build`` function:

- ``encoder``: ``build(input_shape, latent_dim, **options)`` → a ``keras.Model`` that maps
  x of shape ``(batch, *input_shape)`` to ``(z_mean, z_log_var)``, each ``(batch, latent_dim)``.
  The core samples z (the reparameterisation) in its own serializable layer.
- ``decoder``: ``build(latent_dim, output_shape, **options)`` → a ``keras.Model`` that maps
  z of shape ``(batch, latent_dim)`` to x̂ of shape ``(batch, *output_shape)``.
- ``loss``: ``build(**options)`` → a callable ``(x, x_hat, z_mean, z_log_var)`` → dict of
  named scalar tensors, one of them ``"loss"`` (what is optimised).  If the callable also
  takes an ``epoch`` keyword it gets the current (0-based) epoch as a float tensor.
- ``vocoder``: ``build(audio, **options)`` → a callable that turns mel spectrograms in dB,
  ``(N, n_mels, frames)``, into waveforms ``(N, samples)`` at ``audio.sr``.
- ``dataset``: ``build(path, audio, **options)`` → a :class:`vaekit.data.Dataset`.  A dataset
  may register ``detect=fn(path) -> bool`` so ``--data PATH`` can pick it.

``options`` are keyword arguments with defaults; their names and default values are the
component's options (``vaekit plugins`` lists them, ``--option KIND.KEY=VALUE`` sets them).
"""

from __future__ import annotations

import inspect
import keyword
from dataclasses import dataclass, field
from typing import Any, Callable

from vaekit.errors import PluginError, VaekitError, one_line

KINDS = ("encoder", "decoder", "loss", "vocoder", "dataset")
PLURALS = {"encoder": "encoders", "decoder": "decoders", "loss": "losses", "vocoder": "vocoders", "dataset": "datasets"}
_HOOKS = {
    "encoder": "register_encoders",
    "decoder": "register_decoders",
    "loss": "register_losses",
    "vocoder": "register_vocoders",
    "dataset": "register_datasets",
}
#: Positional parameters the core passes to each kind's build function; they are not options.
CONTRACT_ARGS = {
    "encoder": ("input_shape", "latent_dim"),
    "decoder": ("latent_dim", "output_shape"),
    "loss": (),
    "vocoder": ("audio",),
    "dataset": ("path", "audio"),
}


@dataclass
class Component:
    """One registered component."""

    kind: str
    name: str
    build: Callable[..., Any]
    plugin: str
    plugin_version: str
    meta: dict = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        """Option name → default, read from the build function's parameters after the contract's.

        The contract arguments (:data:`CONTRACT_ARGS`) are passed positionally, so they are the
        first parameters whatever their names; ``*args``/``**kwargs`` are not options.
        """
        out = {}
        params = _parameters(self.build)
        for p in params[len(CONTRACT_ARGS[self.kind]):]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[option_name(p.name)] = None if p.default is inspect.Parameter.empty else p.default
        return out

    @property
    def description(self) -> str:
        """The first line of the build function's docstring ("" without one)."""
        doc = inspect.getdoc(self.build) or ""
        return doc.splitlines()[0] if doc else ""

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Validate ``options`` against the signature; return them coerced to the defaults' types."""
        accepted = self.options
        checked = {}
        for key, value in options.items():
            if key not in accepted:
                names = ", ".join(sorted(accepted)) or "none"
                raise PluginError(
                    f"--option {self.kind}.{key}: {self.kind} {self.name!r} has no option {key!r}; "
                    f"its options are: {names}"
                )
            checked[key] = _coerce(f"{self.kind}.{key}", value, accepted[key], f"{self.kind} {self.name!r}")
        return checked

    def resolved_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Every option with its value for this run (defaults filled in)."""
        return {**self.options, **self.check_options(options)}

    def create(self, *args, **options):
        """Call ``build`` with the contract arguments and checked options, naming the plugin on failure."""
        options = {parameter_name(k): v for k, v in self.check_options(options).items()}
        try:
            return self.build(*args, **options)
        except VaekitError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{self.kind} {self.name!r} (from {self.plugin}) failed to build: "
                f"{one_line(exc)}; fix its build function or its options"
            ) from None


def option_name(parameter: str) -> str:
    """A build parameter's option name: ``lambda_`` is option ``lambda`` (Python keywords need the ``_``)."""
    bare = parameter[:-1] if parameter.endswith("_") else parameter
    return bare if keyword.iskeyword(bare) else parameter


def parameter_name(option: str) -> str:
    """The inverse of :func:`option_name`."""
    return option + "_" if keyword.iskeyword(option) else option


def _parameters(build) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(build).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: no options
        return []


def check_build_signature(kind: str, name: str, build, plugin: str) -> None:
    """Raise :class:`PluginError` unless ``build`` can take the contract's positional arguments."""
    contract = CONTRACT_ARGS[kind]
    params = _parameters(build)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    required = [p for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if (len(positional) < len(contract) and not takes_varargs) or len(required) > len(contract):
        shown = ", ".join([*contract, "**options"]) if contract else "**options"
        got = ", ".join(str(p) for p in params)
        raise PluginError(
            f"{plugin}: {kind} {name!r} has build({got}); it must be build({shown}) "
            "with a default for every option"
        )


def _coerce(flag: str, value: Any, default: Any, component: str = "") -> Any:
    """Coerce ``value`` to the type of ``default`` (bool, int, float, str); None accepts anything."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(default, str):
        return str(value)
    else:
        return value
    owner = f" ({component}'s option takes the type of its default {default!r})" if component else f" (default {default!r})"
    raise PluginError(f"--option {flag}={value!r}: expected {type(default).__name__}{owner}")


def all_components(kind: str) -> dict[str, Component]:
    """Every component of ``kind``, by name.  Two with one name is an error naming both plugins."""
    from vaekit.plugins import get_plugin_manager, plugin_origin

    if kind not in KINDS:
        raise PluginError(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
    pm = get_plugin_manager()
    found: dict[str, Component] = {}
    hook = getattr(pm.hook, _HOOKS[kind])
    # Call each implementation on its own, so each registration knows its plugin.
    for impl in hook.get_hookimpls():
        plugin_name, version = plugin_origin(impl.plugin)

        def register(name, build, _p=plugin_name, _v=version, **meta):
            if not isinstance(name, str) or not name:
                raise PluginError(f"{_p}: {_HOOKS[kind]} registered a name that is not a non-empty string: {name!r}")
            if not callable(build):
                raise PluginError(f"{_p}: {kind} {name!r} was registered with a build that is not callable")
            check_build_signature(kind, name, build, _p)
            if name in found:
                raise PluginError(
                    f"{kind} {name!r} is registered twice: by {found[name].plugin} and by {_p}; "
                    "rename one of them"
                )
            found[name] = Component(kind, name, build, _p, _v, meta)

        try:
            impl.function(register)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"{plugin_name}: {_HOOKS[kind]} failed: {one_line(exc)}") from None
    return found


def get_component(kind: str, name: str) -> Component:
    """The component ``name`` of ``kind``, or an error listing the names available."""
    components = all_components(kind)
    if name not in components:
        names = ", ".join(sorted(components)) or "none"
        raise PluginError(
            f"unknown {kind} {name!r}; available: {names} "
            "(`vaekit plugins` lists them; a plugin file is loaded with --plugin FILE.py)"
        )
    return components[name]
