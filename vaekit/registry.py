"""Which run a name stands for, where its models are, and the model registry.

A *run reference* (``RUN_OR_URI``: what ``generate``, ``interpolate``, ``reconstruct``, ``export``
and ``register`` take) is one of

- a run id;
- ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``: a registered model version (of the VAE or of
  the generator, see :func:`register`), standing for the run that logged it;
- ``models:/MODEL_ID``: a logged model (``m-…``), standing for the run that logged it.

A run's two logged models are found through its tags :data:`MODEL_TAG` and :data:`GENERATOR_TAG`
(``models:/MODEL_ID`` URIs, set by :func:`vaekit.runlog.log_generator`).  Runs logged before those
tags existed are searched for their logged model named ``model``; older ones still (MLflow 2) fall
back to ``runs:/RUN_ID/model``.
"""

from __future__ import annotations

import re

from vaekit.errors import ConfigError, VaekitError

#: Run tag: the ``models:/MODEL_ID`` URI of the logged VAE (MLflow's Keras flavour).
MODEL_TAG = "vaekit.model_uri"
#: Run tag: the ``models:/MODEL_ID`` URI of the logged generator (a pyfunc model, see :mod:`vaekit.serving`).
GENERATOR_TAG = "vaekit.generator_uri"
#: The name the VAE is logged under in every run.
MODEL_NAME = "model"
#: ``vaekit register RUN NAME`` registers the generator as NAME + this suffix.
GENERATOR_SUFFIX = "-generator"
#: Registered-model tag: which of a run's two models the registered model holds (``vae`` or ``generator``).
KIND_TAG = "vaekit.model"
#: What ``register`` takes as NAME: what ``models:/NAME/VERSION`` can carry back (no ``/``, ``@``, space, newline).
_NAME = re.compile(r"\w[\w.-]{0,199}")

_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_LOGGED_URI = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)$")


def is_model_uri(ref: str) -> bool:
    return str(ref).startswith("models:/")


def resolve_run(client, ref: str):
    """The MLflow ``Run`` a run reference (run id or ``models:/`` URI) stands for.

    :class:`VaekitError` (one line) for an unknown run, registered model, version or alias, or a
    malformed ``models:/`` URI.
    """
    from mlflow.exceptions import MlflowException

    ref = str(ref)
    if not is_model_uri(ref):
        try:
            return client.get_run(ref)
        except MlflowException:
            raise VaekitError(f"run {ref}: not found in the tracking store {client.tracking_uri}") from None
    if m := _LOGGED_URI.match(ref):
        try:
            run_id = client.get_logged_model(m["model_id"]).source_run_id
        except MlflowException:
            raise VaekitError(f"{ref}: no such logged model in {client.tracking_uri}") from None
    elif (m := _VERSION_URI.match(ref)) or (m := _ALIAS_URI.match(ref)):
        run_id = _registered_version(client, ref, m.groupdict()).run_id
    else:
        raise ConfigError(f"{ref}: not a model URI vaekit reads; use models:/NAME/VERSION, models:/NAME@ALIAS "
                          "or a run id")
    if not run_id:
        raise VaekitError(f"{ref}: was not logged by a run (no source run to read audio parameters from)")
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise VaekitError(f"{ref}: its run {run_id} is not in the tracking store {client.tracking_uri}") from None


def _registered_version(client, ref: str, parts: dict):
    from mlflow.exceptions import MlflowException

    name = parts["name"]
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise VaekitError(f"{ref}: no registered model {name!r} in {client.tracking_uri} "
                          "(vaekit register RUN_ID NAME registers one)") from None
    try:
        if "alias" in parts:
            return client.get_model_version_by_alias(name, parts["alias"])
        return client.get_model_version(name, parts["version"])
    except MlflowException:
        what = f"alias {parts['alias']!r}" if "alias" in parts else f"version {parts['version']}"
        raise VaekitError(f"{ref}: registered model {name!r} has no {what}") from None


def model_uri(client, run) -> str:
    """The URI the run's VAE loads from: its tag, else its logged model named ``model``, else ``runs:/``."""
    if run.data.tags.get(MODEL_TAG):
        return run.data.tags[MODEL_TAG]
    found = _logged_model(client, run, MODEL_NAME)
    return f"models:/{found.model_id}" if found is not None else f"runs:/{run.info.run_id}/{MODEL_NAME}"


def generator_uri(run) -> str | None:
    """The run's generator URI (``None`` for a run logged before vaekit logged generators)."""
    return run.data.tags.get(GENERATOR_TAG) or None


def _logged_model(client, run, name: str):
    """The run's newest READY logged model called ``name``, or ``None``."""
    from mlflow.entities import LoggedModelStatus

    try:
        models = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{name}'",
            order_by=[{"field_name": "creation_time", "ascending": False}])
    except Exception:  # a store without logged models (MLflow 2): runs:/ is the only way
        return None
    return next((m for m in models if m.status == LoggedModelStatus.READY), None)


def register(client, ref: str, name: str, alias: str | None = None) -> dict[str, object]:
    """Register the run's VAE as ``name`` and its generator as ``name`` + :data:`GENERATOR_SUFFIX`.

    Returns ``{"vae": ModelVersion, "generator": ModelVersion or None}`` (``None`` for a run logged
    without a generator).  With ``alias`` both versions get it.  A run that did not finish, or whose
    model is missing, is a one-line :class:`VaekitError` and registers nothing; so is a name
    ``models:/`` URIs cannot carry back (:func:`check_name`), and a name whose registered model holds
    another kind of model (a generator, or models vaekit did not register: see :data:`KIND_TAG`).
    """
    from mlflow.exceptions import MlflowException

    check_name(name)
    run = resolve_run(client, ref)
    run_id = run.info.run_id
    if run.info.status != "FINISHED":
        raise VaekitError(f"run {run_id}: status {run.info.status}, no model to register (only finished runs have one)")
    _check_alias(alias)
    uris = {"vae": model_uri(client, run), "generator": generator_uri(run)}
    if uris["vae"].startswith("runs:/"):
        raise VaekitError(f"run {run_id}: its model is not a logged model of this MLflow (re-run it to register it)")
    names = {"vae": name, "generator": name + GENERATOR_SUFFIX}
    for key in ("vae", "generator"):
        if uris[key] is not None:
            _check_kind(client, names[key], key)
    out: dict[str, object] = {"vae": None, "generator": None}
    created: list[tuple[str, object]] = []  # (name, version or None for a new registered model): undone on failure
    try:
        for key in ("vae", "generator"):
            if uris[key] is not None:
                out[key] = _register_version(client, names[key], key, uris[key], run_id, alias, created)
    except MlflowException as exc:
        _undo(client, created)  # both or neither: no VAE registered without its generator
        raise VaekitError(f"cannot register {names[key]!r}: {exc.message.splitlines()[0]}") from None
    return out


def _check_alias(alias: str | None) -> None:
    if alias is not None and (alias == "latest" or re.fullmatch(r"[vV]\d+", alias) or not re.fullmatch(r"[\w-]+", alias)):
        raise ConfigError(f"--alias {alias!r}: letters, digits, _ and - only, and not 'latest' or v<number> "
                          "(MLflow reserves those)")


def _register_version(client, name: str, kind: str, uri: str, run_id: str, alias: str | None, created: list):
    """A new version of registered model ``name`` (created, tagged ``kind``, if missing) from logged model ``uri``,
    given ``alias``; what it creates is appended to ``created`` as it goes, for :func:`_undo`."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={KIND_TAG: kind},
                                       description=f"vaekit {'generator' if kind == 'generator' else 'VAE'}")
        created.append((name, None))
    model_id = uri.removeprefix("models:/")
    version = client.create_model_version(name, uri, run_id=run_id, model_id=model_id)
    created.append((name, version.version))
    _link_version(client, model_id, version)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def check_name(name: str) -> None:
    """:class:`ConfigError` unless ``name`` is a registered-model name vaekit reads back in ``models:/NAME/VERSION``
    and ``models:/NAME@ALIAS``, and does not end in :data:`GENERATOR_SUFFIX` (the generator's own name)."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"NAME {name!r}: letters, digits, _, - and . only (at most 200, not starting with - or .), "
                          "so that models:/NAME/VERSION names it")
    if name.endswith(GENERATOR_SUFFIX):
        raise ConfigError(f"NAME {name!r}: ends in {GENERATOR_SUFFIX}, the name vaekit gives the generator of NAME "
                          f"{name[:-len(GENERATOR_SUFFIX)]!r}; choose a name without it")


def _check_kind(client, name: str, kind: str) -> None:
    """:class:`VaekitError` if registered model ``name`` exists and holds anything but ``kind`` (``vae``, ``generator``)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return  # none yet: register creates it
    # Before the tag, vaekit said which in the description.
    held = model.tags.get(KIND_TAG) or {"vaekit VAE": "vae", "vaekit generator": "generator"}.get(model.description or "")
    if held != kind:
        what = {"vae": "vaekit VAEs", "generator": "vaekit generators"}.get(held, "models vaekit did not register")
        raise VaekitError(f"registered model {name!r} holds {what}, not {'VAEs' if kind == 'vae' else 'generators'}; "
                          "choose another NAME")


def _undo(client, created) -> None:
    import contextlib

    for name, version in reversed(created):
        with contextlib.suppress(Exception):
            if version is None:
                client.delete_registered_model(name)
            else:
                client.delete_model_version(name, version)


def _link_version(client, model_id: str, version) -> None:
    """Record the version on the logged model, as ``mlflow.register_model`` does (the UI links them)."""
    import contextlib
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    with contextlib.suppress(Exception):  # a missing link costs the UI a cross-reference, nothing else
        existing = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
        value = (json.loads(existing) if existing else []) + [{"name": version.name, "version": version.version}]
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(value)})
