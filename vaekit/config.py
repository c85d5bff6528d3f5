"""Run settings: defaults (the notebook's), a TOML file, flags, ``KIND.KEY=VALUE`` options.

Precedence: flags > ``--option`` > config file > defaults.  A config file uses the same
names as the flags (with ``_`` for ``-``) and a table per component kind for options::

    encoder = "conv2"
    epochs = 20
    latent_dim = 16

    [options.loss]
    lambda = 1000
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vaekit.components import KINDS
from vaekit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class RunConfig:
    """Everything that defines a run.  Defaults reproduce the notebook."""

    data: str | None = None
    dataset: str | None = None
    encoder: str = "conv2"
    decoder: str = "conv2"
    loss: str = "mse-kl"
    vocoder: str = "griffinlim"
    epochs: int = 10
    batch_size: int = 64
    latent_dim: int = 20
    learning_rate: float = 0.001
    validation_split: float = 0.1
    samples: int = 4
    seed: int = 0
    experiment: str = "vaekit"
    run_name: str | None = None
    tracking_uri: str | None = None
    #: TensorFlow op determinism (slower; same results on GPU too).  On CPU runs repeat without it.
    deterministic: bool = False
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Performance and scale (see vaekit.distribute).
    precision: str = "float32"
    jit_compile: bool | None = None
    strategy: str | None = None
    #: Seconds of training between checkpoint writes (0: every epoch); a stop always writes one.
    checkpoint_interval: float = 60.0

    def option(self, kind: str) -> dict[str, Any]:
        """The options given for one component kind."""
        return dict(self.options.get(kind, {}))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_toml(self) -> str:
        """The config as a TOML file that ``--config`` reads back."""
        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "options" or value is None:
                continue
            lines.append(f"{f.name} = {json.dumps(value)}")
        for kind, opts in sorted(self.options.items()):
            if opts:
                lines.append(f"\n[options.{kind}]")
                lines.extend(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(opts.items()))
        return "\n".join(lines) + "\n"

    def validate(self) -> "RunConfig":
        checks = [
            ("epochs", self.epochs >= 1, "must be at least 1"),
            ("batch-size", self.batch_size >= 1, "must be at least 1"),
            ("latent-dim", self.latent_dim >= 1, "must be at least 1"),
            ("samples", self.samples >= 0, "must be 0 or more"),
            ("learning-rate", self.learning_rate > 0, "must be positive"),
            ("validation-split", 0 <= self.validation_split < 1, "must be in [0, 1)"),
            ("checkpoint-interval", self.checkpoint_interval >= 0, "must be 0 or more (seconds)"),
        ]
        if not isinstance(self.deterministic, bool):
            raise ConfigError(f"deterministic: expected true or false, got {self.deterministic!r}")
        if self.jit_compile not in (None, True, False):
            raise ConfigError(f"jit_compile: expected true or false, got {self.jit_compile!r}")
        for flag, ok, what in checks:
            if not ok:
                raise ConfigError(f"--{flag} {what}, got {getattr(self, flag.replace('-', '_'))!r}")
        from vaekit.distribute import check

        check(self.precision, self.strategy)
        return self


def parse_value(text: str) -> Any:
    """A command-line value: TOML/JSON scalars (1, 0.5, true, "x") or else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_options(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``["loss.lambda=1000", ...]`` → ``{"loss": {"lambda": 1000}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        kind, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--option {item!r}: expected KIND.KEY=VALUE, e.g. loss.lambda=1000")
        if kind not in KINDS:
            raise ConfigError(f"--option {item!r}: unknown kind {kind!r}; kinds are: {', '.join(KINDS)}")
        out.setdefault(kind, {})[name] = parse_value(value.strip())
    return out


def load_toml(path) -> dict[str, Any]:
    """Read a config file into RunConfig keyword arguments, checking names and types."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    known = {f.name: f for f in fields(RunConfig)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"--config {path}: unknown setting {key!r}; settings are: {', '.join(sorted(known))}")
        if name == "options":
            if not isinstance(value, dict) or any(k not in KINDS or not isinstance(v, dict) for k, v in value.items()):
                raise ConfigError(f"--config {path}: [options] must hold tables named after kinds: {', '.join(KINDS)}")
        out[name] = value
    return out


def merge(base: RunConfig, **overrides) -> RunConfig:
    """``base`` with non-None overrides; ``options`` are merged per kind, key by key."""
    options = {k: dict(v) for k, v in base.options.items()}
    for kind, opts in (overrides.pop("options", None) or {}).items():
        options.setdefault(kind, {}).update(opts)
    changes = {k: v for k, v in overrides.items() if v is not None}
    cfg = replace(base, options=options, **changes)
    return _check_types(cfg)


def _check_types(cfg: RunConfig) -> RunConfig:
    for f, cast in (("epochs", int), ("batch_size", int), ("latent_dim", int), ("samples", int), ("seed", int),
                    ("learning_rate", float), ("validation_split", float), ("checkpoint_interval", float)):
        value = getattr(cfg, f)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or (cast is int and value != int(value))):
            raise ConfigError(f"--{f.replace('_', '-')}: expected {cast.__name__}, got {value!r}")
        setattr(cfg, f, cast(value))
    return cfg


def build_config(config_file=None, options=(), **flags) -> RunConfig:
    """Defaults ← config file ← ``--option`` items ← flags (None means "not given")."""
    cfg = RunConfig()
    if config_file:
        cfg = merge(cfg, **load_toml(config_file))
    cfg = merge(cfg, options=parse_options(options), **flags)
    return cfg.validate()
