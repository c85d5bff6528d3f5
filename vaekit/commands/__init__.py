"""vaekit's commands: each module is one command's code (``vaekit run``, ``generate``/``interpolate``/``reconstruct``,
``explore``, ``export``, ``tune``, ``sweep``, ``ui``), a thin layer over the library (the modules of :mod:`vaekit`
itself), called by :mod:`vaekit.cli`.

A command imports the library, never another command; the library never imports a command
(tests/test_architecture.py checks both).
"""
