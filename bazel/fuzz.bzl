"""libFuzzer targets with a regression test for the normal build.

qcal_fuzz_test(name, srcs, deps, corpus) defines:
  <name>_fuzzer     the libFuzzer binary (tags manual + fuzzer: built only by
                    tools/fuzz.sh with clang and --config=fuzz; gcc has no
                    -fsanitize=fuzzer, so it is kept out of `//...`);
  <name>_regression a cc_test, built by any compiler, that feeds every file of
                    the corpus plus a fixed set of pseudo-random inputs to the
                    same LLVMFuzzerTestOneInput. It runs in `bazel test //...`
                    and under --config=asan, so every input ever added to the
                    corpus (crash reproducers included) stays a regression
                    test.
"""

load("//bazel:copts.bzl", "QCAL_EXACT_MATH_COPTS")

def qcal_fuzz_test(name, srcs, deps = [], corpus = None):
    corpus = corpus or "corpus/" + name
    native.cc_binary(
        name = name + "_fuzzer",
        testonly = True,
        srcs = srcs,
        deps = deps,
        copts = QCAL_EXACT_MATH_COPTS,
        linkopts = ["-fsanitize=fuzzer"],
        tags = ["manual", "fuzzer"],
    )
    native.cc_test(
        name = name + "_regression",
        srcs = srcs,
        deps = deps + ["//tests/fuzz:regression_main"],
        copts = QCAL_EXACT_MATH_COPTS,
        data = native.glob([corpus + "/**"]),
        args = [native.package_name() + "/" + corpus],
    )
