"""vaekit's built-in plugins, installed as ``vaekit.default_plugins``.

Each module is an ordinary plugin, listed in :data:`vaekit.plugins.DEFAULT_PLUGINS`.
"""
