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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vaekit import kinds
from vaekit.errors import DataError, PluginError, VaekitError, one_line

KINDS = kinds.NAMES
PLURALS = {k.name: k.plural for k in kinds.KINDS}


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

        The contract arguments (:attr:`vaekit.kinds.Kind.contract`) are passed positionally, so they are the
        first parameters whatever their names; ``*args``/``**kwargs`` are not options.
        """
        out = {}
        params = _parameters(self.build)
        for p in params[len(kinds.get(self.kind).contract):]:
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
    contract = kinds.get(kind).contract
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

    hook_name = kinds.get(kind).hook
    pm = get_plugin_manager()
    found: dict[str, Component] = {}
    hook = getattr(pm.hook, hook_name)
    # Call each implementation on its own, so each registration knows its plugin.
    for impl in hook.get_hookimpls():
        plugin_name, version = plugin_origin(impl.plugin)

        def register(name, build, _p=plugin_name, _v=version, **meta):
            if not isinstance(name, str) or not name:
                raise PluginError(f"{_p}: {hook_name} registered a name that is not a non-empty string: {name!r}")
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
            raise PluginError(f"{plugin_name}: {hook_name} failed: {one_line(exc)}") from None
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


def select_dataset(config) -> Component:
    """``--dataset NAME``, else the dataset whose ``detect`` accepts ``--data PATH``, else ``synthetic``."""
    from pathlib import Path

    if config.dataset:
        return get_component("dataset", config.dataset)
    if config.data is None:
        return get_component("dataset", "synthetic")
    path = Path(config.data)
    if not path.exists():
        raise DataError(f"--data {path}: no such file or directory")
    for comp in all_components("dataset").values():
        detect = comp.meta.get("detect")
        if detect is not None and detect(path):
            return comp
    raise DataError(
        f"--data {path}: not a notebook-format directory (x_train.npy, x_test.npy, min_values.npy, "
        "max_values.npy) nor a folder of audio files; name a dataset with --dataset"
    )


def resolve(config) -> dict[str, Component]:
    """Every component a run of ``config`` uses, by kind, with its options checked (no backend needed)."""
    comps = {kind: get_component(kind, getattr(config, kind)) for kind in KINDS if kind != "dataset"}
    comps["dataset"] = select_dataset(config)
    for kind in config.options:
        comps[kind].check_options(config.option(kind))
    return comps


def load_dataset(config, comps: dict[str, Component]):
    """Build the dataset component for ``config`` and check that it returned a :class:`vaekit.data.Dataset`."""
    from vaekit.audio import AudioParams
    from vaekit.data import Dataset

    comp = comps["dataset"]
    ds = comp.create(config.data, AudioParams(), **config.option("dataset"))
    if not isinstance(ds, Dataset):
        raise PluginError(f"dataset {comp.name!r} (from {comp.plugin}) must return a vaekit.data.Dataset, "
                          f"got {type(ds).__name__}")
    return ds


def vocode(comp: Component, vocoder_fn, mel_db):
    """Run a vocoder and check its output against the contract: (N, samples), finite."""
    import numpy as np

    try:
        audio = np.asarray(vocoder_fn(mel_db), dtype=np.float32)
    except Exception as exc:
        raise PluginError(
            f"vocoder {comp.name!r} (from {comp.plugin}) failed on mel spectrograms of shape {mel_db.shape}: "
            f"{one_line(exc)}"
        ) from None
    if audio.ndim != 2 or audio.shape[0] != mel_db.shape[0]:
        raise PluginError(
            f"vocoder {comp.name!r} (from {comp.plugin}): expected waveforms of shape ({mel_db.shape[0]}, samples) "
            f"for mel spectrograms of shape {mel_db.shape}, got {audio.shape}"
        )
    if not np.isfinite(audio).all():
        raise PluginError(f"vocoder {comp.name!r} (from {comp.plugin}) returned NaN or Inf samples")
    return audio


def check_vocoder(comp: Component, vocoder_fn, ds) -> None:
    """Pre-flight: vocode one dummy spectrogram, so a broken vocoder fails in seconds, before training.

    The dummy has the data's shape (a vocoder may need the exact frame count) and a constant
    level mid-way through the data's dB range: Griffin-Lim's NNLS converges on it at once,
    where a real clip costs it seconds.
    """
    import numpy as np

    mel_db = ds.denormalize(np.full((1, *ds.shape), 0.5, dtype=np.float32)).astype(np.float32)
    try:
        vocode(comp, vocoder_fn, mel_db)
    except PluginError as exc:
        raise PluginError(f"{exc} (pre-flight check on a dummy spectrogram, before training)") from None
