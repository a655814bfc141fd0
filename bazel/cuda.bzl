"""Building CUDA code with nvcc inside qcal's Bazel 4 workspace.

Public macros:

  qcal_cuda_library(name, srcs, hdrs = [], deps = [], copts = [], **kwargs)
      `.cu` files in `srcs` are compiled by nvcc (a rule of this file), every
      other source goes to a `cc_library` compiled by the C++ toolchain (g++),
      and the result is one `cc_library` named `name` linked with the static
      CUDA runtime. See the macro's docstring for the details.

  qcal_cuda_test(name, **kwargs) / qcal_cuda_binary(name, **kwargs)
      A `cc_test` / `cc_binary` that exists only when the CUDA toolkit was
      found. Tests must skip at run time when no device is present
      (tests/cuda/cuda_test_util.h).

  CUDA_AVAILABLE
      Re-exported from @local_cuda: whether the toolkit was found (and
      QCAL_DISABLE_CUDA was not set) when the repository was generated.

Without a toolkit (`CUDA_AVAILABLE == False`) every `qcal_cuda_library` is an
empty `cc_library`, so targets that link it (a tool that links the CUDA backend)
still build, just without CUDA; `qcal_cuda_test` and `qcal_cuda_binary` define
nothing, so `bazel test //...` runs the CPU tests alone. Code that includes a
header of a `qcal_cuda_library` must itself be CUDA-only.

Rules for `.cu` files: include only CUDA headers and plain C++ project headers
(`core/float_convert.h`, `core/host_device.h`, a kernel's own launcher header);
never Abseil or other host-only libraries. A `.cc` wrapper compiled by g++
turns the `cudaError_t` a launcher returns into an `absl::Status`. The nvcc
action checks this: it fails when the dependency file nvcc writes names an
Abseil header.
"""

load(
    "@local_cuda//:defs.bzl",
    _CUDA_AVAILABLE = "CUDA_AVAILABLE",
    _HOST_CXX = "HOST_CXX",
    _NVCC = "NVCC",
)
load("//bazel:copts.bzl", "QCAL_EXACT_MATH_COPTS")

CUDA_AVAILABLE = _CUDA_AVAILABLE

# Architectures every kernel is built for: native code for Hopper (H100/H200,
# sm_90) and Ampere (A100, sm_80), plus compute_90 PTX that the driver can
# JIT-compile for newer parts.
QCAL_CUDA_GENCODE = [
    "-gencode",
    "arch=compute_90,code=sm_90",
    "-gencode",
    "arch=compute_90,code=compute_90",
    "-gencode",
    "arch=compute_80,code=sm_80",
]

# nvcc flags for every `.cu` file. --fmad=false: contracting a*b+c into one
# FMA rounds once instead of twice and would change results that must match
# the CPU bit for bit (the host side gets -ffp-contract=off for the same
# reason). --expt-relaxed-constexpr lets device code call constexpr host
# functions such as std::numeric_limits<float>::max().
QCAL_NVCC_COPTS = [
    "-std=c++17",
    "-O3",
    "--fmad=false",
    "--expt-relaxed-constexpr",
    "-Xcompiler",
    "-fPIC,-ffp-contract=off,-fno-fast-math",
] + QCAL_CUDA_GENCODE

# Source kinds, by file name ending.
_CU_EXTENSIONS = [".cu"]
_HEADER_EXTENSIONS = [".h", ".cuh", ".hpp", ".inc", ".inl"]

def _has_extension(path, extensions):
    for ext in extensions:
        if path.endswith(ext):
            return True
    return False

def _package_relative(f, label):
    """`f`'s path below the package of `label` (its basename if outside)."""
    path = f.short_path
    if path.startswith("../"):
        # "../<repository>/<path>" for a file of an external repository.
        path = path.split("/", 2)[2]
    if not label.package:
        return path
    prefix = label.package + "/"
    return path[len(prefix):] if path.startswith(prefix) else f.basename

def _cuda_objects_impl(ctx):
    bin_root = ctx.bin_dir.path
    include_dirs = [".", bin_root, ctx.genfiles_dir.path]
    workspace_root = ctx.label.workspace_root  # "external/qcal" or "".
    if workspace_root:
        include_dirs += [workspace_root, bin_root + "/" + workspace_root]

    dep_contexts = [dep[CcInfo].compilation_context for dep in ctx.attr.deps]
    system_dirs = []
    defines = []
    for cc in dep_contexts:
        include_dirs += cc.quote_includes.to_list() + cc.includes.to_list()
        system_dirs += cc.system_includes.to_list()
        defines += cc.defines.to_list()

    # Keep the first occurrence of each, in order.
    include_dirs = {d: None for d in include_dirs}.keys()
    system_dirs = {d: None for d in system_dirs if d not in include_dirs}.keys()
    defines = {d: None for d in defines}.keys()

    headers = depset(
        ctx.files.hdrs,
        transitive = [cc.headers for cc in dep_contexts],
    )

    objects = []
    for src in ctx.files.srcs:
        rel = _package_relative(src, ctx.label)
        stem = rel[:-len(".cu")]
        obj = ctx.actions.declare_file("_cuda_objs/%s/%s.o" % (ctx.label.name, stem))
        dep_file = ctx.actions.declare_file("_cuda_objs/%s/%s.d" % (ctx.label.name, stem))

        args = ctx.actions.args()
        args.add(dep_file)
        args.add(src)
        args.add(_NVCC)
        if _HOST_CXX:
            args.add("-ccbin", _HOST_CXX)
        args.add_all(QCAL_NVCC_COPTS)
        args.add_all(include_dirs, format_each = "-I%s")
        args.add_all(system_dirs, before_each = "-isystem")
        args.add_all(defines, format_each = "-D%s")
        args.add_all(ctx.attr.copts)
        args.add("-MD")
        args.add("-MF", dep_file)
        args.add("-c", src)
        args.add("-o", obj)

        ctx.actions.run_shell(
            command = _NVCC_COMMAND,
            arguments = [args],
            inputs = depset([src], transitive = [headers]),
            outputs = [obj, dep_file],
            mnemonic = "NvccCompile",
            progress_message = "Compiling CUDA %s" % src.short_path,
            # PATH for the host compiler and the assembler; nvcc itself is
            # called by its absolute path so that it finds cicc and ptxas.
            use_default_shell_env = True,
        )
        objects.append(obj)

    return [DefaultInfo(files = depset(objects))]

# $1: dependency file, $2: the .cu file, the rest: the nvcc command line.
# nvcc gets a private TMPDIR: it names its temporary files after its process
# id, and sandboxed actions run in their own PID namespaces (the same small
# PIDs) over a shared /tmp, so concurrent compilations would overwrite each
# other's files ("ptxas fatal: Input file ... could not be opened").
# After compiling, fail if anything included (directly or through a header)
# comes from Abseil: .cu files must stay plain CUDA C++.
_NVCC_COMMAND = """\
set -eu
dep_file="$1"
src="$2"
shift 2
nvcc_tmp=$(mktemp -d "${TMPDIR:-/tmp}/qcal-nvcc.XXXXXXXX")
trap 'rm -rf "$nvcc_tmp"' EXIT
TMPDIR="$nvcc_tmp" "$@"
if grep -E '(^|[ /])absl/' "$dep_file" >/dev/null; then
  echo "ERROR: $src includes Abseil headers (directly or through a project" >&2
  echo "header). .cu files may include only CUDA headers and plain C++" >&2
  echo "headers; convert cudaError_t to absl::Status in a host .cc wrapper." >&2
  grep -oE '[^ ]*absl/[^ ]*' "$dep_file" | head -n 5 >&2
  exit 1
fi
"""

_cuda_objects = rule(
    implementation = _cuda_objects_impl,
    doc = "Compiles each .cu file with nvcc into a .o (position independent).",
    attrs = {
        "srcs": attr.label_list(allow_files = _CU_EXTENSIONS),
        "hdrs": attr.label_list(allow_files = True),
        "deps": attr.label_list(providers = [CcInfo]),
        "copts": attr.string_list(),
    },
)

def qcal_cuda_library(
        name,
        srcs,
        hdrs = [],
        deps = [],
        copts = [],
        host_copts = [],
        **kwargs):
    """A C++ library with CUDA kernels, linked with the static CUDA runtime.

    Args:
      name: the cc_library's name.
      srcs: `.cu` files (compiled by nvcc with QCAL_NVCC_COPTS + `copts`),
        host `.cc` files that call the CUDA runtime (compiled by g++ with
        QCAL_EXACT_MATH_COPTS + `host_copts`, CUDA headers on the include
        path) and private headers (visible to both).
      hdrs: public headers. Plain C++ (they may include CUDA's
        `cuda_runtime_api.h`); also inputs of the nvcc actions.
      deps: cc_library dependencies. Their transitive headers are inputs of
        the nvcc actions and their include paths and defines are passed to
        nvcc; the objects link with them.
      copts: extra nvcc flags for the `.cu` files.
      host_copts: extra g++ flags for the host `.cc` files.
      **kwargs: passed to the cc_library (visibility, testonly, tags, ...);
        `testonly`, `tags` and `visibility` also reach the nvcc rule.

    Without a CUDA toolkit `name` is an empty cc_library with the same
    visibility, so dependents build; nothing of `srcs`, `hdrs` or `deps` is
    used.
    """
    for key in ("alwayslink", "linkstatic"):
        if key in kwargs:
            fail("qcal_cuda_library %s: %s is always on" % (name, key))

    if not CUDA_AVAILABLE:
        native.cc_library(
            name = name,
            visibility = kwargs.get("visibility"),
            testonly = kwargs.get("testonly"),
            tags = kwargs.get("tags"),
        )
        return

    cu_srcs = [s for s in srcs if _has_extension(s, _CU_EXTENSIONS)]
    private_hdrs = [s for s in srcs if _has_extension(s, _HEADER_EXTENSIONS)]
    host_srcs = [s for s in srcs if s not in cu_srcs]

    objects = []
    if cu_srcs:
        objects = [name + "_cuda_objs"]
        _cuda_objects(
            name = name + "_cuda_objs",
            srcs = cu_srcs,
            hdrs = hdrs + private_hdrs,
            deps = deps,
            copts = copts,
            testonly = kwargs.get("testonly"),
            tags = kwargs.get("tags"),
            visibility = ["//visibility:private"],
        )

    native.cc_library(
        name = name,
        srcs = objects + host_srcs,
        hdrs = hdrs,
        copts = QCAL_EXACT_MATH_COPTS + host_copts,
        deps = deps + [
            "@local_cuda//:cuda_headers",
            "@local_cuda//:cudart_static",
        ],
        # The objects and the static runtime are linked into each binary:
        # fastbuild's shared-object linking of tests would otherwise leave the
        # kernel launch stubs' runtime symbols undefined. alwayslink keeps
        # kernels and static registrations that nothing references by name.
        linkstatic = True,
        alwayslink = True,
        **kwargs
    )

def _cuda_only(rule_fn, name, tags, kwargs):
    if not CUDA_AVAILABLE:
        return
    rule_fn(name = name, tags = (tags or []) + ["cuda"], **kwargs)

def qcal_cuda_test(name, tags = [], **kwargs):
    """A cc_test tagged "cuda", defined only when the toolkit was found.

    The test must not fail for want of a GPU: call
    QCAL_SKIP_WITHOUT_CUDA_DEVICE() (tests/cuda/cuda_test_util.h) first in
    every test that needs one, which GTEST_SKIPs with the reason. Tests of
    argument checking and error mapping should run without a device.
    tools/gpu_check.sh runs every test tagged "cuda".
    """
    _cuda_only(native.cc_test, name, tags, kwargs)

def qcal_cuda_binary(name, tags = [], **kwargs):
    """A cc_binary tagged "cuda", defined only when the toolkit was found."""
    _cuda_only(native.cc_binary, name, tags, kwargs)
