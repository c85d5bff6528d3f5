"""Components: what plugins register, looked up by kind and name, built with checked options.

The contract of each kind's ``build`` function (its positional arguments, what it returns) is the kind's
record in :mod:`vaekit.kinds` (:attr:`vaekit.kinds.Kind.contract` and :attr:`vaekit.kinds.Kind.returns`);
the hook specs' docstrings and docs/components.md show it.  A conditional run (``--condition``) also passes
``condition=K`` to an encoder or decoder whose build function declares ``condition=None`` (docs/components.md,
"Conditional encoders and decoders"); an unconditional run never passes it.

``options`` are keyword arguments with defaults; their names and default values are the
component's options (``vaekit plugins`` lists them, ``--option KIND.KEY=VALUE`` sets them).

A plugin declares the values each option accepts when it registers the component:
``register(name, build, options={"n_iter": {"min": 1, "max": 10000}})``.  The keys of a range are
``min`` / ``max`` (inclusive), ``above`` / ``below`` (exclusive), ``finite`` (default true: NaN
and ±inf are refused) and ``choices`` (a list of the only values allowed); see
:class:`OptionRange`.  Every float option is refused NaN and ±inf unless its range says
``"finite": False``.  Values are checked by :meth:`Component.check_options`, before a run
starts, and a refusal is one line naming ``--option KIND.KEY``, the value and the range.
"""

from __future__ import annotations

import inspect
import keyword
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vaekit import kinds
from vaekit.errors import DataError, PluginError, VaekitError, one_line

#: The keys a plugin may give an option's range in ``register(..., options={KEY: {...}})``.
RANGE_KEYS = ("min", "max", "above", "below", "finite", "choices")


@dataclass(frozen=True)
class OptionRange:
    """The values one option accepts: ``min <= v <= max``, ``above < v < below``, finite, one of ``choices``.

    ``None`` bounds are open.  ``finite`` applies to float values (NaN and ±inf are refused
    unless it is false); ``choices`` to any type.  :meth:`describe` is the text errors and
    ``vaekit plugins`` show.
    """

    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None
    finite: bool = True
    choices: tuple | None = None

    @classmethod
    def from_spec(cls, spec: dict, where: str) -> OptionRange:
        """Build from a plugin's ``{"min": ..., ...}``; :class:`PluginError` naming ``where`` if malformed."""
        if not isinstance(spec, dict):
            raise PluginError(f"{where}: a range must be a dict with keys among {', '.join(RANGE_KEYS)}, got {spec!r}")
        unknown = sorted(set(spec) - set(RANGE_KEYS))
        if unknown:
            raise PluginError(f"{where}: unknown range key(s) {', '.join(unknown)}; keys are: {', '.join(RANGE_KEYS)}")
        for key in ("min", "max", "above", "below"):
            bound = spec.get(key)
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))
                                      or math.isnan(bound)):
                raise PluginError(f"{where}: range {key} must be a number, got {bound!r}")
        choices = spec.get("choices")
        if choices is not None and (isinstance(choices, (str, bytes)) or not hasattr(choices, "__iter__")):
            raise PluginError(f"{where}: range choices must be a list of values, got {choices!r}")
        return cls(spec.get("min"), spec.get("max"), spec.get("above"), spec.get("below"),
                   bool(spec.get("finite", True)), tuple(choices) if choices is not None else None)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside this range ("" words), or None when it is inside."""
        if self.choices is not None and value not in self.choices:
            return "not one of the choices"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # bounds are for numbers; a str option is limited by choices alone
        if isinstance(value, float) and not math.isfinite(value):
            if self.finite:
                return "not a finite number"
            if math.isnan(value):
                return None  # an author who allows non-finite values allows NaN, which compares to nothing
        if ((self.min is not None and value < self.min) or (self.max is not None and value > self.max)
                or (self.above is not None and value <= self.above)
                or (self.below is not None and value >= self.below)):
            return "out of range"
        return None

    def describe(self, key: str, floats: bool = True) -> str:
        """E.g. ``1 ≤ n_iter ≤ 10000``, ``lambda ≥ 0, finite``, ``split_by one of 'random', 'speaker'``.

        ``floats=False`` (an int option) leaves out "finite", which only a float can fail.
        """
        if self.choices is not None:
            return f"{key} one of {', '.join(repr(c) for c in self.choices)}"
        low = f"{_num(self.min)} ≤ " if self.min is not None else f"{_num(self.above)} < " if self.above is not None else ""
        high = f" ≤ {_num(self.max)}" if self.max is not None else f" < {_num(self.below)}" if self.below is not None else ""
        if not low and not high:
            return f"a finite {key}" if self.finite else f"any {key}"
        if low and not high:  # "lambda ≥ 0" reads better than "0 ≤ lambda"
            text = f"{key} ≥ {_num(self.min)}" if self.min is not None else f"{key} > {_num(self.above)}"
        else:
            text = f"{low}{key}{high}"
        return text + (", finite" if floats and self.finite and not (low and high) else "")

    def to_dict(self) -> dict:
        """The declared keys only (what ``vaekit plugins --json`` shows)."""
        out = {k: getattr(self, k) for k in ("min", "max", "above", "below") if getattr(self, k) is not None}
        out["finite"] = self.finite
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out


def _num(bound: float) -> str:
    """A bound as written: ``4294967295``, not ``4.29497e+09``; ``0.5``, not ``0.500000``."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


#: The range of a float option whose plugin declared none: finite.
FINITE = OptionRange()


@dataclass
class Component:
    """One registered component."""

    kind: str
    name: str
    build: Callable[..., Any]
    plugin: str
    plugin_version: str
    meta: dict = field(default_factory=dict)
    #: Option name → :class:`OptionRange`, as the plugin declared them (``register(..., options=...)``).
    ranges: dict[str, OptionRange] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        """Option name → default, read from the build function's parameters after the contract's.

        The contract arguments (:attr:`vaekit.kinds.Kind.contract`) are passed positionally, so they are the
        first parameters whatever their names; ``*args``/``**kwargs`` are not options.
        """
        out = {}
        params = _parameters(self.build)
        kind = kinds.get(self.kind)
        for p in params[len(kind.contract):]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or (kind.conditional and p.name == kinds.CONDITION):
                continue
            out[option_name(p.name)] = None if p.default is inspect.Parameter.empty else p.default
        return out

    @property
    def option_ranges(self) -> dict[str, OptionRange]:
        """Option name → the range :meth:`check_options` applies: the declared ones, and finite for floats."""
        out = {}
        for key, default in self.options.items():
            if key in self.ranges:
                out[key] = self.ranges[key]
            elif isinstance(default, float):
                out[key] = FINITE
        return out

    @property
    def takes_condition(self) -> bool:
        """Whether ``build`` declares the keyword ``condition`` (encoders and decoders; see the module docstring)."""
        return kinds.get(self.kind).conditional and any(
            p.name == kinds.CONDITION and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in _parameters(self.build))

    def refuse_condition(self, condition: str) -> None:
        """:class:`PluginError` (one line) unless this component takes a condition."""
        if not self.takes_condition:
            raise PluginError(f"--condition {condition}: {self.kind} {self.name!r} (from {self.plugin}) does not take a "
                              f"condition (its build function has no `{kinds.CONDITION}=None` parameter); conv2, resconv "
                              "and dense do, or run without --condition")

    @property
    def description(self) -> str:
        """The first line of the build function's docstring ("" without one)."""
        doc = inspect.getdoc(self.build) or ""
        return doc.splitlines()[0] if doc else ""

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Validate ``options`` against the signature and the declared ranges; return them coerced.

        Values are coerced to their defaults' types, then checked against the option's
        :class:`OptionRange` (a float option without one must be finite).  A refusal is a
        :class:`PluginError` of one line: ``--option KIND.KEY=VALUE: out of range; COMPONENT takes RANGE``.
        """
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
            self._check_range(key, checked[key])
        return checked

    def _check_range(self, key: str, value: Any) -> None:
        allowed = self.ranges.get(key, FINITE)
        problem = allowed.problem(value)
        if problem:
            raise PluginError(f"--option {self.kind}.{key}={value!r}: {problem}; "
                              f"{self.kind} {self.name!r} takes {self.describe_range(key)}")

    def describe_range(self, key: str) -> str:
        """The range of option ``key`` in words, as errors and ``vaekit plugins`` show it."""
        default = self.options.get(key)
        return self.option_ranges.get(key, FINITE).describe(key, floats=not isinstance(default, int))

    def resolved_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Every option with its value for this run (defaults filled in)."""
        return {**self.options, **self.check_options(options)}

    def create(self, *args, condition: int | None = None, **options):
        """Call ``build`` with the contract arguments and checked options, naming the plugin on failure.

        ``condition`` (encoders and decoders of a conditional run: the number of classes) is passed only when given.
        """
        options = {parameter_name(k): v for k, v in self.check_options(options).items()}
        if condition is not None:
            options[kinds.CONDITION] = int(condition)
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
        got = ", ".join(str(p) for p in params)
        raise PluginError(
            f"{plugin}: {kind} {name!r} has build({got}); it must be {kinds.get(kind).signature} "
            "with a default for every option"
        )


def _coerce(flag: str, value: Any, default: Any, component: str = "") -> Any:
    """Coerce ``value`` to the type of ``default`` (bool, int, float, str); None accepts anything."""
    if default is None or not isinstance(default, (bool, int, float, str)):
        return value
    if isinstance(default, str):
        return str(value)
    coerced = _as_bool(value) if isinstance(default, bool) else _as_int(value) if isinstance(default, int) else _as_float(value)
    if coerced is not _UNCOERCIBLE:
        return coerced
    owner = f" ({component}'s option takes the type of its default {default!r})" if component else f" (default {default!r})"
    raise PluginError(f"--option {flag}={value!r}: expected {type(default).__name__}{owner}")


_UNCOERCIBLE = object()  # what the _as_* helpers return for a value the type cannot take


def _as_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    return _UNCOERCIBLE


def _as_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _parse(int, value)


def _as_float(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return _parse(float, value)


def _parse(kind: type, value: Any) -> Any:
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    return _UNCOERCIBLE


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

        def register(name, build, _p=plugin_name, _v=version, options=None, **meta):
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
            comp = Component(kind, name, build, _p, _v, meta)
            comp.ranges = _declared_ranges(comp, options)
            if "preflight" in meta:
                try:
                    comp.check_options(meta["preflight"])
                except PluginError as exc:
                    raise PluginError(f"{_p}: {kind} {name!r} preflight=: {exc}") from None
            found[name] = comp

        try:
            impl.function(register)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"{plugin_name}: {hook_name} failed: {one_line(exc)}") from None
    return found


def _declared_ranges(comp: Component, options) -> dict[str, OptionRange]:
    """``register(..., options={KEY: {...}})`` checked: each key an option, each default inside its range.

    A default outside its own range would make every run without the option a run the check
    never saw, so it is the plugin's error, raised when the plugin registers.
    """
    if options is None:
        return {}
    where = f"{comp.plugin}: {comp.kind} {comp.name!r}"
    if not isinstance(options, dict):
        raise PluginError(f"{where}: options= must be a dict of option name → range, got {type(options).__name__}")
    defaults = comp.options
    ranges = {}
    for key, spec in options.items():
        if key not in defaults:
            raise PluginError(f"{where}: options= names {key!r}, which is not an option of its build function; "
                              f"its options are: {', '.join(sorted(defaults)) or 'none'}")
        ranges[key] = OptionRange.from_spec(spec, f"{where}: option {key!r}")
        default = defaults[key]
        if default is not None and ranges[key].problem(default):
            raise PluginError(f"{where}: the default {key}={default!r} is outside its own range "
                              f"({ranges[key].describe(key, floats=not isinstance(default, int))})")
    return ranges


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


def resolve(config) -> dict:
    """Every component a run of ``config`` uses, by kind, with its options checked (no backend needed).

    A kind that selects several (:attr:`vaekit.kinds.Kind.multiple`: ``metrics``, by :func:`select_metrics`)
    maps to a list; every other kind to the one :class:`Component` :meth:`vaekit.config.RunConfig.selected`
    names (``--KIND NAME``, or ``--component KIND=NAME`` for a kind without a flag of its own), or None when
    the run names none (no discriminator: no adversarial phase).
    """
    comps = {kind: get_component(kind, config.selected(kind)) if config.selected(kind) else None
             for kind in kinds.names() if kind != "dataset" and not kinds.get(kind).multiple}
    comps["dataset"] = select_dataset(config)
    comps["metrics"] = select_metrics(config.metrics)
    if getattr(config, "condition", None):
        for kind in ("encoder", "decoder"):
            comps[kind].refuse_condition(config.condition)
    for kind in config.options:
        if kinds.get(kind).multiple:  # to every selected component that has the option
            check_metric_options(comps[kind], config.option(kind))
        elif comps[kind] is None:
            if config.option(kind):
                how = f"--{kind} NAME" if hasattr(config, kind) else f"--component {kind}=NAME"
                raise PluginError(f"--option {kind}.{next(iter(config.option(kind)))}: the run has no {kind} "
                                  f"(name one with {how})")
        else:
            comps[kind].check_options(config.option(kind))
    return comps


#: The plugin whose metrics run when ``--metrics`` is not given.
BUILT_IN_METRICS_PLUGIN = "vaekit.default_plugins.metrics"


def select_metrics(names: str | None) -> list[Component]:
    """``--metrics NAME,...`` as components, in that order; all the built-in metrics when ``names`` is None.

    An empty string selects none.  An unknown name is an error listing the metrics available.
    """
    if names is None:
        return [c for c in all_components("metrics").values() if c.plugin == BUILT_IN_METRICS_PLUGIN]
    wanted = [n.strip() for n in str(names).split(",") if n.strip()]
    available = all_components("metrics")
    for name in wanted:
        if name not in available:
            raise PluginError(f"--metrics: unknown metric {name!r}; available: {', '.join(sorted(available)) or 'none'} "
                              "(a plugin file is loaded with --plugin FILE.py)")
    return [available[n] for n in dict.fromkeys(wanted)]


def check_metric_options(metrics: list[Component], options: dict) -> None:
    """``--option metrics.KEY=VALUE`` goes to every selected metric with that option; one none has is an error."""
    for key, value in options.items():
        takers = [m for m in metrics if key in m.options]
        if not takers:
            names = sorted({k for m in metrics for k in m.options}) or ["none"]
            raise PluginError(f"--option metrics.{key}: no selected metric has an option {key!r}; "
                              f"their options are: {', '.join(names)}")
        for m in takers:
            m.check_options({key: value})


def load_dataset(config, comps: dict[str, Component]):
    """Build the dataset component for ``config`` and check that it returned a :class:`vaekit.data.Dataset`."""
    from vaekit.audio import AudioParams
    from vaekit.data import Dataset

    comp = comps["dataset"]
    ds = comp.create(config.data, AudioParams(), **config.option("dataset"))
    if not isinstance(ds, Dataset):
        raise PluginError(f"dataset {comp.name!r} (from {comp.plugin}) must return a vaekit.data.Dataset, "
                          f"got {type(ds).__name__}")
    if getattr(config, "condition", None):
        from vaekit.data import check_condition

        check_condition(ds, config.condition)
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


def check_vocoder(comp: Component, vocoder_fn, ds, options: dict | None = None):
    """Pre-flight: vocode one dummy spectrogram, so a broken vocoder fails before training;
    return its waveform (1, samples).

    The dummy has the data's shape (a vocoder may need the exact frame count) and a constant
    level mid-way through the data's dB range: Griffin-Lim's NNLS converges on it at once,
    where a real clip needs many iterations.  A vocoder registered with ``preflight={OPTION: VALUE}``
    is checked with a second instance built with the run's ``options`` overridden by those
    (e.g. ``n_iter=1``), so the check costs the same whatever the run's iteration count (figures in
    docs/benchmarks.md).
    """
    import numpy as np

    mel_db = ds.denormalize(np.full((1, *ds.shape), 0.5, dtype=np.float32)).astype(np.float32)
    cheap = comp.meta.get("preflight")
    if cheap and options is not None:
        vocoder_fn = comp.create(ds.audio, **{**options, **cheap})
    try:
        return vocode(comp, vocoder_fn, mel_db)
    except PluginError as exc:
        raise PluginError(f"{exc} (pre-flight check on a dummy spectrogram, before training)") from None
