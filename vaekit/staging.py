"""Folders that appear whole or not at all: written beside their place, then renamed into it.

Below every other vaekit module (it imports only the standard library): ``vaekit prepare``'s datasets
(:func:`vaekit.data.staged_output_dir`) and ``vaekit export``'s folders (:func:`vaekit.commands.export.export`) use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(out, replace: bool = False) -> Iterator[Path]:
    """Yield a new hidden folder beside ``out`` (``.NAME.partial-*``); rename it to ``out`` when the block succeeds.

    ``out`` is therefore either complete or as it was: an error or an interrupt in the block (or in the
    rename) removes the staging folder, and a killed process leaves only a hidden ``.NAME.partial-*``
    folder that nothing takes for ``out``.  With ``replace`` an existing ``out`` is moved aside first and
    removed only once the new one is in place (put back if the rename fails); without it, an ``out`` made
    meanwhile by another process makes the rename fail, and stays.  ``out``'s parent must exist.  The
    staging folder has an ordinary new folder's permissions (the umask's), not ``mkdtemp``'s private 0700.
    """
    out = Path(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    try:
        yield staging
        _rename_into_place(staging, out, replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _rename_into_place(staging: Path, out: Path, replace: bool) -> None:
    if not (replace and (out.exists() or out.is_symlink())):
        os.replace(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        os.replace(out, old / out.name)
        try:
            os.replace(staging, out)
        except BaseException:
            if not (out.exists() or out.is_symlink()):
                os.replace(old / out.name, out)  # put the previous folder back
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            old.rmdir()  # empty, unless the previous folder could not be put back: then it stays there
        raise
    shutil.rmtree(old, ignore_errors=True)
