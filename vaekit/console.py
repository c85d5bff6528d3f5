"""What a command prints: its progress and results, not the libraries' start-up chatter.

:func:`configure` is the one place that decides it, called by each command that imports a backend
or MLflow, before either is imported.  By default it keeps off the console

- TensorFlow's C++ log (``TF_CPP_MIN_LOG_LEVEL``) and the lines its bundled absl/XLA logging writes
  straight to file descriptor 2 before any level applies (``oneDNN custom operations are on``,
  ``Could not find cuda drivers``, ``failed call to cuInit`` on a machine without a GPU, …);
- Python-side absl INFO messages;
- MLflow's INFO lines (``Creating initial MLflow database tables…``): ``MLFLOW_LOGGING_LEVEL=WARNING``.

Warnings and errors stay: Python warnings, MLflow and absl WARNING/ERROR records, and every line on
standard error that is not in :data:`NOISE`.  ``verbose=True`` changes nothing: everything is shown.
Settings already in the environment (a user's own ``TF_CPP_MIN_LOG_LEVEL``) win.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

#: Lines written to standard error by native code that are noise for a vaekit user.  Informational
#: (``I…``) lines of the absl/glog format are all noise; warning and error lines only when listed.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"Unable to register cu(DNN|FFT|BLAS) factory"),
    re.compile(r"computation placer already registered"),
    re.compile(r"oneDNN supports DT_\w+ only on platforms with AVX-512"),
    re.compile(r"TF-TRT Warning: Could not find TensorRT"),
)

#: TensorFlow found no CUDA driver: a CPU machine, where the failing ``cuInit`` that follows is no news.
_NO_DRIVER = re.compile(r"Could not find cuda drivers on your machine")
_CUINIT = re.compile(r"failed call to cuInit")
_seen_no_driver = False

_installed: _StderrFilter | None = None


def is_noise(line: str) -> bool:
    """Whether one line of standard error is library chatter a default run keeps off the console.

    ``failed call to cuInit`` counts as noise only after TensorFlow said it found no CUDA driver (a
    CPU machine); on a machine with a driver it is a real problem and stays.
    """
    global _seen_no_driver
    if _NO_DRIVER.search(line):
        _seen_no_driver = True
    m = _ABSL_LINE.match(line)
    if m and m.group(1) == "I":
        return True
    if _seen_no_driver and _CUINIT.search(line):
        return True
    return any(p.search(line) for p in NOISE)


def configure(verbose: bool = False) -> None:
    """Quiet the libraries for this process and the processes it starts (see the module docstring).

    Call it before TensorFlow, JAX or MLflow is imported; a second call changes nothing.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("absl").setLevel(logging.WARNING)
    if "mlflow" in sys.modules:  # imported already (a plugin file, a test): its loggers read the level at import
        logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"])
    global _installed
    if _installed is None:
        _installed = _StderrFilter.install()


def drain() -> None:
    """Forward what the standard-error filter still holds and give descriptor 2 back.

    For a process about to end with ``os._exit``, which skips the ``atexit`` hook that does this:
    without it the last lines written (e.g. "Interrupted.") would be lost in the pipe.
    """
    if _installed is not None:
        _installed.close()


class _StderrFilter:
    """File descriptor 2 through a pipe whose reader drops :func:`is_noise` lines.

    Native libraries write to the descriptor itself, below Python's ``sys.stderr``, so only a
    descriptor-level filter sees their lines.  The reader forwards everything else at once (a
    partial line too, unless it could be the start of a library line), so progress bars and error
    messages appear as before; at exit the pipe is drained before the process ends.
    """

    def __init__(self, original_fd: int, read_fd: int):
        self.original_fd, self.read_fd = original_fd, read_fd
        self.thread = threading.Thread(target=self._pump, name="vaekit-stderr-filter", daemon=True)

    @classmethod
    def install(cls) -> _StderrFilter | None:
        try:
            if sys.stderr.fileno() != 2:  # stderr is captured in-process (click's CliRunner, pytest): leave fd 2 alone
                return None
            sys.stderr.flush()
            original = os.dup(2)
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, 2)
            os.close(write_fd)
        except (OSError, ValueError, AttributeError):  # no descriptor 2 (closed, or a stream without one)
            return None
        os.set_inheritable(original, False)
        self = cls(original, read_fd)
        self.thread.start()
        atexit.register(self.close)
        return self

    def _write(self, data: bytes) -> None:
        while data:
            try:
                data = data[os.write(self.original_fd, data):]
            except OSError:
                return

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                if pending and not is_noise(pending.decode(errors="replace")):
                    self._write(pending)
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = [line + b"\n" for line in lines if not is_noise(line.decode(errors="replace"))]
            if kept:
                self._write(b"".join(kept))
            # A partial line: show it now (a progress bar redraws with \r) unless a library line may be starting.
            if pending and not re.match(rb"^([IWEF]\d|WARNING: All log)", pending):
                self._write(pending)
                pending = b""

    def close(self) -> None:
        """Give descriptor 2 back and forward what is left in the pipe."""
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        try:
            os.dup2(self.original_fd, 2)  # closes the pipe's last write end in this process: the reader sees EOF
        except OSError:
            return
        self.thread.join(timeout=5)
