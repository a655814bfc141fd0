"""Repositories qcal needs, all local: Debian's Bazel support packages, the
Debian-installed C++ libraries and the CUDA toolkit when one is found.

A workspace that depends on qcal calls `qcal_dependencies()` after declaring
`qcal` itself (see README.md)."""

load("//bazel:cuda_configure.bzl", "cuda_configure")

# Where Debian's bazel-platforms, bazel-skylib and bazel-rules-java put their trees.
_DEBIAN_BAZEL = "/usr/share/bazel"

def _rules_cc_shim_impl(rctx):
    # Bazel 4's @bazel_tools//tools/cpp loads @rules_cc//cc:defs.bzl. Debian's
    # bazel-rules-cc targets a newer Bazel, so provide the few symbols Bazel 4
    # needs as plain re-exports of the native rules.
    rctx.file("WORKSPACE", "workspace(name = \"rules_cc\")\n")
    rctx.file("BUILD", "")
    rctx.file("cc/BUILD", "\n".join([
        "package(default_visibility = [\"//visibility:public\"])",
        "alias(",
        "    name = \"toolchain_type\",",
        "    actual = \"@bazel_tools//tools/cpp:toolchain_type\",",
        ")",
        "",
    ]))
    rctx.file("cc/defs.bzl", "\n".join([
        "\"\"\"Native C++ rules re-exported for Bazel 4.\"\"\"",
        "cc_binary = native.cc_binary",
        "cc_import = native.cc_import",
        "cc_library = native.cc_library",
        "cc_proto_library = native.cc_proto_library",
        "cc_test = native.cc_test",
        "cc_toolchain = native.cc_toolchain",
        "cc_toolchain_suite = native.cc_toolchain_suite",
        "objc_library = native.objc_library",
        "",
    ]))

_rules_cc_shim = repository_rule(implementation = _rules_cc_shim_impl)

def _coverage_tools_shim_impl(rctx):
    # `bazel test` references @remote_coverage_tools even without coverage;
    # two empty filegroups satisfy it without a download.
    rctx.file("WORKSPACE", "workspace(name = \"remote_coverage_tools\")\n")
    rctx.file("BUILD", "\n".join([
        "package(default_visibility = [\"//visibility:public\"])",
        "filegroup(name = \"coverage_report_generator\")",
        "filegroup(name = \"lcov_merger\")",
        "",
    ]))

_coverage_tools_shim = repository_rule(implementation = _coverage_tools_shim_impl)

def qcal_dependencies():
    """Declares every external repository qcal uses. Skips names already declared."""
    existing = native.existing_rules()
    if "platforms" not in existing:
        native.local_repository(name = "platforms", path = _DEBIAN_BAZEL + "/platforms")
    if "bazel_skylib" not in existing:
        native.local_repository(name = "bazel_skylib", path = _DEBIAN_BAZEL + "/tools/skylib")
    if "rules_java" not in existing:
        native.local_repository(name = "rules_java", path = _DEBIAN_BAZEL + "/rules/java")
    if "rules_cc" not in existing:
        _rules_cc_shim(name = "rules_cc")
    if "remote_coverage_tools" not in existing:
        _coverage_tools_shim(name = "remote_coverage_tools")
    if "qcal_system_libs" not in existing:
        native.new_local_repository(
            name = "qcal_system_libs",
            path = "/usr",
            build_file = "@qcal//third_party:system_libs.BUILD",
        )
    if "local_cuda" not in existing:
        cuda_configure(name = "local_cuda")
