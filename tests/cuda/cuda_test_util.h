// Helpers for tests of CUDA code. Machines without a GPU (CI, developers'
// machines) build and run every CUDA test; the tests that need a device skip
// at run time, saying why, instead of failing.
#ifndef QCAL_TESTS_CUDA_CUDA_TEST_UTIL_H_
#define QCAL_TESTS_CUDA_CUDA_TEST_UTIL_H_

#include "absl/status/statusor.h"
#include "cuda/runtime.h"
#include "gtest/gtest.h"

// QCAL_SKIP_WITHOUT_CUDA_DEVICE skips the current test (GTEST_SKIP, from the
// test body or SetUp) when no CUDA device is usable, with a message giving the
// reason (e.g. no driver). It fails the test when probing for devices fails
// for another reason (a broken driver installation). Use it as a statement.
#define QCAL_SKIP_WITHOUT_CUDA_DEVICE()                                     \
  do {                                                                      \
    const ::absl::StatusOr<::qcal::CudaDeviceProbe> qcal_probe_ =           \
        ::qcal::ProbeCudaDevices();                                         \
    ASSERT_TRUE(qcal_probe_.ok()) << qcal_probe_.status();                  \
    if (qcal_probe_->device_count == 0) {                                   \
      GTEST_SKIP() << "No CUDA device found, skipping: "                    \
                   << qcal_probe_->no_device_reason;                        \
    }                                                                       \
  } while (false)

#endif  // QCAL_TESTS_CUDA_CUDA_TEST_UTIL_H_
