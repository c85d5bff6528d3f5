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


#: What sqlite and MLflow say when they cannot write (their exceptions carry no errno).
_WRITE_FAILURES = ("database or disk is full", "No space left on device", "disk I/O error",
                   "attempt to write a readonly database", "Read-only file system", "Disk quota exceeded")


def write_failure(exc: BaseException) -> str | None:
    """Why ``exc`` (or an exception that caused it) is a failure to write to disk, else None.

    A full disk, a read-only file system, a quota or an I/O error: the user's storage, not a bug.
    """
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            return current.strerror or str(current)
        text = str(current)
        reason = next((m for m in _WRITE_FAILURES if m in text), None)
        if reason:
            return reason
        current = current.__cause__ or current.__context__
    return None


def save_traceback(exc: BaseException, also: list[str] = ()) -> str:
    """Write ``exc``'s traceback to a new file (the temporary directory, else the home directory); its path.

    ``also``: more text to keep with it (MLflow's logged tracebacks).  "(not saved: …)" when no file
    can be written anywhere, as on a machine whose disks are all full.
    """
    import os
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(exc)) + "".join(f"\n--- logged by MLflow ---\n{t}\n" for t in also)
    for directory in (tempfile.gettempdir(), os.path.expanduser("~")):
        try:
            fd, path = tempfile.mkstemp(prefix="vaekit-error-", suffix=".txt", dir=directory)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            return path
        except OSError as error:
            last = error
    return f"(not saved: {last.strerror or last})"
