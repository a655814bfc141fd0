"""The observer plugins linked by //observers:all_observers.

Each is its own package and cc_library (qcal_observer_plugin, alwayslink) that
registers itself under the name its package is called. Adding a plugin: create
observers/<name>/ with a qcal_observer_plugin, add it here, and add the name to
the pinned list in tests/observers/registry_test.cc."""

OBSERVER_PLUGINS = [
    "//observers/memoryless_minmax",
    "//observers/memoryless_mse",
    "//observers/minmax",
    "//observers/mse",
    "//observers/static_minmax",
]
