"""Dataset ``notebook``: a directory in the notebook's format (see :mod:`vaekit.data`)."""

import vaekit
from vaekit import data


def build_notebook(path, audio):
    if path is None:
        raise ValueError("the notebook dataset needs --data DIR")
    return data.load_notebook_dir(path, audio)


@vaekit.hookimpl
def register_datasets(register):
    register("notebook", build_notebook, detect=data.is_notebook_dir)
