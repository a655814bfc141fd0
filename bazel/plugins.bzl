"""Macro for observer plugins: each is its own cc_library that registers itself
with the registry from a namespace-scope constant, so it must be linked whole
(`alwayslink`), even when nothing references its symbols."""

load("//bazel:copts.bzl", "QCAL_EXACT_MATH_COPTS")

def qcal_observer_plugin(name, srcs, hdrs = [], deps = [], **kwargs):
    if "alwayslink" in kwargs:
        fail("qcal_observer_plugin %s: alwayslink is always on for plugins" % name)
    native.cc_library(
        name = name,
        srcs = srcs,
        hdrs = hdrs,
        deps = deps + ["//registry"],
        copts = QCAL_EXACT_MATH_COPTS + kwargs.pop("copts", []),
        alwayslink = 1,
        **kwargs
    )
