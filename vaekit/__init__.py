"""vaekit: variational autoencoders on mel spectrograms, as plugins, tracked in MLflow.

Importing this package is cheap (no TensorFlow): plugins import it for ``hookimpl``.
"""

import pluggy

__version__ = "0.1.0"

#: Marks a plugin's hook implementations: ``@vaekit.hookimpl``.
hookimpl = pluggy.HookimplMarker("vaekit")

__all__ = ["hookimpl", "__version__"]
