// Tensor helpers for observer tests: build tensors of any observable dtype
// from float values, random tensors, and decode any tensor to floats.
#ifndef QCAL_TESTS_OBSERVERS_TEST_TENSORS_H_
#define QCAL_TESTS_OBSERVERS_TEST_TENSORS_H_

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "core/tensor.h"

namespace qcal {
namespace testing_util {

// MakeTensor builds a tensor of `dtype` (F32/F16/BF16/I32/I64) whose
// elements are `values` rounded to the dtype.
Tensor MakeTensor(DType dtype, absl::Span<const int64_t> shape,
                  const std::vector<float>& values);

// RandomTensor fills a tensor with normal(0, scale) values, deterministic in
// `seed`, plus a few outliers when `outliers`.
Tensor RandomTensor(DType dtype, absl::Span<const int64_t> shape,
                    uint32_t seed, float scale = 1.0f, bool outliers = false);

// ToFloats decodes every element of a contiguous CPU tensor of any dtype.
std::vector<float> ToFloats(const TensorView& view);

// SameBits is true when two tensors have equal dtype, shape and bytes.
bool SameBits(const TensorView& a, const TensorView& b);

// ObserverDTypeCase is one (registered observer name, observed dtype) pair of
// a suite that runs for every registered observer.
using ObserverDTypeCase = std::tuple<std::string, DType>;

// ObserverDTypeCases returns every registered observer with F32, F16 and
// BF16.
std::vector<ObserverDTypeCase> ObserverDTypeCases();

// ObserverDTypeCaseName names a case "<observer>_<DTYPE>" for gtest.
std::string ObserverDTypeCaseName(
    const ::testing::TestParamInfo<ObserverDTypeCase>& info);

}  // namespace testing_util
}  // namespace qcal

#endif  // QCAL_TESTS_OBSERVERS_TEST_TENSORS_H_
