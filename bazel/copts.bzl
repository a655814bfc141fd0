"""Compiler flags shared by every qcal target (one place, as abseil's copts/)."""

# Warnings for all project code. No -ffast-math anywhere: results must match
# PyTorch bit for bit.
QCAL_COPTS = [
    "-Wall",
    "-Wextra",
    "-Wno-sign-compare",
    "-Wno-unused-parameter",
    "-Werror=return-type",
]

# For files whose floating-point results must be exact: forbid contracting
# a*b+c into an FMA, which would round once instead of twice.
QCAL_EXACT_MATH_COPTS = QCAL_COPTS + ["-ffp-contract=off", "-fno-fast-math"]

QCAL_TEST_COPTS = QCAL_COPTS
