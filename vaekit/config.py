"""Run settings: defaults (the notebook's), a TOML file, flags, ``KIND.KEY=VALUE`` options.

Precedence: flags > ``--option`` > config file > defaults.  A config file uses the same
names as the flags (with ``_`` for ``-``) and a table per component kind for options::

    encoder = "conv2"
    epochs = 20
    latent_dim = 16

    [options.loss]
    lambda = 1000

A kind without a setting of its own (one a plugin adds) is selected in a ``[components]`` table
(``widget = "hum"``), as ``--component widget=hum`` does.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vaekit import kinds
from vaekit.adversarial import LOSSES as ADVERSARIAL_LOSSES
from vaekit.backend import BACKENDS, ORDER, resolve
from vaekit.backend import select as select_backend
from vaekit.distribute import PRECISIONS, STRATEGIES
from vaekit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _setting(default, help: str, shown: str | None = None, **flag):
    """A RunConfig field: its default, the CLI's help and how ``--help`` shows the default (``shown``).

    ``flag``: extra click option arguments (``type``, ``choices``…) where the default's type is not enough.
    """
    meta = {"help": help, "shown": shown, "flag": flag}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Everything that defines a run.  Defaults reproduce the notebook.

    The one source of defaults: ``vaekit run``'s flags, their ``--help`` and docs/usage.md's table are
    derived from (and tested against) these fields.
    """

    data: str | None = _setting(None, "Notebook-format directory or folder of audio.", "built-in synthetic voices",
                                path=True)
    dataset: str | None = _setting(None, kinds.get("dataset").help, "detected from --data")
    encoder: str = _setting("conv2", kinds.get("encoder").help)
    decoder: str = _setting("conv2", kinds.get("decoder").help)
    loss: str = _setting("mse-kl", kinds.get("loss").help)
    vocoder: str = _setting("griffinlim", kinds.get("vocoder").help)
    # The adversarial phase (vaekit.adversarial): off unless a discriminator is named.
    discriminator: str | None = _setting(None, kinds.get("discriminator").help, "none: no adversarial phase")
    adversarial_warmup: int = _setting(5, "With --discriminator: epochs of the plain loss before the "
                                       "discriminator's gradient reaches the VAE.")
    adversarial_loss: str = _setting("hinge", "With --discriminator: the GAN loss.", choices=ADVERSARIAL_LOSSES)
    adversarial_weight: float = _setting(1.0, "With --discriminator: weight of the generator's GAN loss.")
    adversarial_feature_weight: float = _setting(1.0, "With --discriminator: weight of feature matching "
                                                 "(L1 between the discriminator's features of data and reconstructions).")
    epochs: int = _setting(10, "Training epochs.")
    batch_size: int = _setting(64, "Batch size (global: split over the replicas of --strategy).")
    latent_dim: int = _setting(20, "Latent dimensions d.")
    condition: str | None = _setting(None, "Train a conditional VAE on this label of the dataset (e.g. digit, speaker): "
                                     "encoder and decoder get each clip's class; generate --label asks for one.",
                                     "none: unconditional", metavar="LABEL")
    learning_rate: float = _setting(0.001, "Adam learning rate.")
    validation_split: float = _setting(0.1, "Share of x_train held out for per-epoch validation.")
    metrics: str | None = _setting(None, kinds.get("metrics").help, "all built-ins")
    early_stop: int = _setting(0, "Stop once --monitor has not improved for this many epochs (0: never); the best "
                               "epoch's weights are kept. --epochs stays the upper bound.", metavar="PATIENCE")
    monitor: str = _setting("val_loss", "The epoch metric --early-stop watches (lower is better).")
    samples: int = _setting(4, "Sounds generated from z ~ N(0, I) after training.")
    #: Listening while it trains (:func:`vaekit.runlog.epoch_audio`).  Each time costs 4 vocoder calls: every 10
    #: epochs keeps a default run within 5 % of its time without it (benchmarks/audio_every.py, docs/listen.md).
    audio_every: int = _setting(10, "Every N epochs, log vocoded reconstructions of test clips and samples of fixed z "
                                "as WAVs under epochs/NNN/, with a strip of their spectrograms (0: never).", metavar="N")
    seed: int = _setting(0, "Random seed (data split and order, initial weights, sampling).")
    experiment: str = _setting("vaekit", "MLflow experiment name.")
    run_name: str | None = _setting(None, "MLflow run name.", "ENCODER-LOSS-λ-random suffix")
    tracking_uri: str | None = _setting(None, "MLflow tracking URI or store directory.",
                                        "MLFLOW_TRACKING_URI, else ./mlflow.db")
    #: None until :meth:`with_backend` resolves it; a concrete name from there on (what the run trains and logs with).
    backend: str | None = _setting(None, "Keras backend.", ORDER, choices=tuple(BACKENDS))
    #: Deterministic kernels (slower; same results on GPU too).  On CPU runs repeat without it.
    deterministic: bool = _setting(False, "Deterministic kernels (repeatable GPU runs; slower).", is_flag=True)
    options: dict[str, dict[str, Any]] = _setting({}, "A component option, e.g. loss.lambda=1000 (repeatable).")
    #: Kind → component name, for a kind without a field of its own here (one a plugin adds: see vaekit.kinds).
    components: dict[str, str] = _setting({}, "A component of a kind without a flag of its own, e.g. widget=hum "
                                          "(repeatable).")
    # Performance and scale (see vaekit.distribute).
    precision: str = _setting("float32", "Numeric precision: mixed_* pay on GPUs (float16 with loss scaling).",
                              choices=PRECISIONS)
    jit_compile: bool | None = _setting(None, "Force XLA compilation on or off.", "Keras' choice", on_off=True)
    steps_per_execution: int = _setting(1, "Training steps per compiled call: above 1 cuts the per-step overhead on "
                                        "GPUs (the NaN check then sees every Nth batch).")
    strategy: str | None = _setting(None, "Several devices: mirrored (this machine's), multiworker (several machines).",
                                    "one device", choices=STRATEGIES)
    #: Seconds of training between checkpoint writes (0: every epoch); a stop always writes one.
    checkpoint_interval: float = _setting(60.0, "Seconds of training between checkpoint writes; 0: after every "
                                          "epoch. Ctrl-C, SIGTERM and failures always write the last finished epoch.")

    #: MLflow's own system metrics (CPU, memory, disk, network; GPU where pynvml finds one) under system/.
    system_metrics: bool = _setting(False, "Log CPU, memory and GPU use under system/ while the run lasts "
                                    "(MLflow's system metrics; GPU needs pynvml).", is_flag=True)

    def selected(self, kind: str) -> str | None:
        """The component name this run selects for ``kind``: its field, else ``components[kind]`` (None: none)."""
        return getattr(self, kind) if kind in _FIELDS else self.components.get(kind)

    def option(self, kind: str) -> dict[str, Any]:
        """The options given for one component kind."""
        return dict(self.options.get(kind, {}))

    def with_backend(self) -> RunConfig:
        """A copy whose ``backend`` is resolved and selected for this process (:func:`vaekit.backend.select`):
        a concrete name, never None, which the code a run calls reads instead of asking Keras."""
        return replace(self, backend=select_backend(self.backend))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_toml(self) -> str:
        """The config as a TOML file that ``--config`` reads back."""
        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("options", "components") or value is None:
                continue
            lines.append(f"{f.name} = {json.dumps(value)}")
        if self.components:
            lines.append("\n[components]")
            lines.extend(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(self.components.items()))
        for kind, opts in sorted(self.options.items()):
            if opts:
                lines.append(f"\n[options.{kind}]")
                lines.extend(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(opts.items()))
        return "\n".join(lines) + "\n"

    def validate(self) -> RunConfig:
        checks = [
            ("epochs", self.epochs >= 1, "must be at least 1"),
            ("batch-size", self.batch_size >= 1, "must be at least 1"),
            ("latent-dim", self.latent_dim >= 1, "must be at least 1"),
            ("samples", self.samples >= 0, "must be 0 or more"),
            ("audio-every", self.audio_every >= 0, "must be 0 (never) or more epochs"),
            ("early-stop", self.early_stop >= 0, "must be 0 (never) or more epochs"),
            ("learning-rate", self.learning_rate > 0, "must be positive"),
            ("validation-split", 0 <= self.validation_split < 1, "must be in [0, 1)"),
            ("checkpoint-interval", self.checkpoint_interval >= 0, "must be 0 or more (seconds)"),
            ("steps-per-execution", self.steps_per_execution >= 1, "must be at least 1"),
            ("adversarial-warmup", self.adversarial_warmup >= 0, "must be 0 or more epochs"),
            ("adversarial-weight", self.adversarial_weight >= 0, "must be 0 or more"),
            ("adversarial-feature-weight", self.adversarial_feature_weight >= 0, "must be 0 or more"),
            ("adversarial-warmup", not self.discriminator or self.adversarial_warmup < self.epochs,
             f"must be below --epochs ({self.epochs}): the adversarial phase would never start"),
        ]
        if self.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ConfigError(f"--adversarial-loss {self.adversarial_loss!r}: must be one of {', '.join(ADVERSARIAL_LOSSES)}")
        if self.condition is not None and (not isinstance(self.condition, str) or not self.condition):
            raise ConfigError(f"--condition: expected a label name, got {self.condition!r}")
        for name in ("deterministic", "system_metrics"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        if self.jit_compile not in (None, True, False):
            raise ConfigError(f"jit_compile: expected true or false, got {self.jit_compile!r}")
        for flag, ok, what in checks:
            if not ok:
                raise ConfigError(f"--{flag} {what}, got {getattr(self, flag.replace('-', '_'))!r}")
        from vaekit.distribute import check

        check(self.precision, self.strategy, resolve(self.backend))
        return self


_FIELDS = frozenset(f.name for f in fields(RunConfig))


def check_components(components: dict, where: str) -> dict[str, str]:
    """``components`` (kind → name) checked: each key a kind without a RunConfig field of its own, each name a string."""
    if not isinstance(components, dict):
        raise ConfigError(f"{where}: expected a table of KIND = \"NAME\", got {components!r}")
    for kind, name in components.items():
        if kind not in kinds.names():
            raise ConfigError(f"{where} {kind}: {kinds.unknown(kind)}")
        if kind in _FIELDS:
            raise ConfigError(f"{where} {kind}: {kind} has its own setting; use --{kind} NAME")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where} {kind}: expected a component name, got {name!r}")
    return dict(components)


def parse_components(items) -> dict[str, str]:
    """``["widget=hum", ...]`` → ``{"widget": "hum"}``, checked by :func:`check_components`."""
    out = {}
    for item in items or ():
        kind, sep, name = item.partition("=")
        if not sep:
            raise ConfigError(f"--component {item!r}: expected KIND=NAME, e.g. widget=hum")
        out[kind.strip()] = name.strip()
    return check_components(out, "--component")


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
        if kind not in kinds.names():
            raise ConfigError(f"--option {item!r}: {kinds.unknown(kind)}")
        out.setdefault(kind, {})[name] = parse_value(value.strip())
    return out


def read_toml(path: Path, where: str) -> dict[str, Any]:
    """The TOML file's table; a missing, unreadable or malformed file is one :class:`ConfigError` line
    starting with ``where`` (the flag and the file, e.g. ``--config run.toml``)."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {' '.join(str(exc).split())}") from None


def load_toml(path) -> dict[str, Any]:
    """Read a config file into RunConfig keyword arguments, checking names and types."""
    path = Path(path)
    raw = read_toml(path, f"--config {path}")
    known = {f.name: f for f in fields(RunConfig)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"--config {path}: unknown setting {key!r}; settings are: {', '.join(sorted(known))}")
        if name == "options":
            if not isinstance(value, dict) or any(k not in kinds.names() or not isinstance(v, dict) for k, v in value.items()):
                raise ConfigError(f"--config {path}: [options] must hold tables named after kinds: {', '.join(kinds.names())}")
        if name == "components":
            value = check_components(value, f"--config {path}: [components]")
        out[name] = value
    return out


def merge(base: RunConfig, **overrides) -> RunConfig:
    """``base`` with non-None overrides; ``options`` are merged per kind, key by key, ``components`` per kind."""
    options = {k: dict(v) for k, v in base.options.items()}
    for kind, opts in (overrides.pop("options", None) or {}).items():
        options.setdefault(kind, {}).update(opts)
    components = {**base.components, **(overrides.pop("components", None) or {})}
    changes = {k: v for k, v in overrides.items() if v is not None}
    cfg = replace(base, options=options, components=components, **changes)
    return _check_types(cfg)


def _check_types(cfg: RunConfig) -> RunConfig:
    for f, cast in (("epochs", int), ("batch_size", int), ("latent_dim", int), ("samples", int), ("seed", int),
                    ("steps_per_execution", int), ("early_stop", int), ("adversarial_warmup", int),
                    ("audio_every", int), ("learning_rate", float), ("validation_split", float),
                    ("checkpoint_interval", float), ("adversarial_weight", float),
                    ("adversarial_feature_weight", float)):
        value = getattr(cfg, f)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or (cast is int and value != int(value))):
            raise ConfigError(f"--{f.replace('_', '-')}: expected {cast.__name__}, got {value!r}")
        setattr(cfg, f, cast(value))
    return cfg


def build_config(config_file=None, options=(), **flags) -> RunConfig:
    """Defaults ← config file ← ``--option`` items ← flags (None means "not given"; ``components``: ``KIND=NAME`` items)."""
    cfg = RunConfig()
    if config_file:
        cfg = merge(cfg, **load_toml(config_file))
    cfg = merge(cfg, options=parse_options(options), **{**flags, "components": parse_components(flags.get("components"))})
    return cfg.validate()
