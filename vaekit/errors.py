"""User-facing errors.

A :class:`VaekitError` is a mistake the user can fix (bad flag, bad file, broken
plugin).  The CLI prints its message as one line and exits non-zero, with no traceback.
Anything else is a bug and keeps its traceback.
"""


class VaekitError(Exception):
    """An error whose message alone tells the user what to fix."""

    exit_code = 2


class DataError(VaekitError):
    """Input data that cannot be used (names the file and what is wrong)."""


class PluginError(VaekitError):
    """A plugin that cannot be loaded or used (names the plugin and what to fix)."""


class ShapeError(PluginError):
    """A component that cannot take the data's spectrogram size (``run`` adds which data)."""


class ConfigError(VaekitError):
    """A setting, flag or config file that cannot be used."""


class TrainingError(VaekitError):
    """Training could not go on (for example a non-finite loss)."""

    exit_code = 1


def one_line(exc: BaseException, limit: int = 400) -> str:
    """``Type: message`` on one line (Keras and TensorFlow errors span many), cut at ``limit`` characters."""
    text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
