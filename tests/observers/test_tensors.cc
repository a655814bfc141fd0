#include "tests/observers/test_tensors.h"

#include <cstring>
#include <random>

#include "core/float_convert.h"
#include "registry/registry.h"

namespace qcal {
namespace testing_util {

Tensor MakeTensor(DType dtype, absl::Span<const int64_t> shape,
                  const std::vector<float>& values) {
  Tensor t = Tensor::Zeros(dtype, shape).value();
  for (size_t i = 0; i < values.size() && static_cast<int64_t>(i) < t.numel();
       ++i) {
    const float v = values[i];
    switch (dtype) {
      case DType::kF32:
        t.mutable_data_as<float>()[i] = v;
        break;
      case DType::kF16:
        t.mutable_data_as<uint16_t>()[i] = FloatToF16Bits(v);
        break;
      case DType::kBF16:
        t.mutable_data_as<uint16_t>()[i] = FloatToBf16Bits(v);
        break;
      case DType::kI32:
        t.mutable_data_as<int32_t>()[i] = static_cast<int32_t>(v);
        break;
      case DType::kI64:
        t.mutable_data_as<int64_t>()[i] = static_cast<int64_t>(v);
        break;
      default:
        break;
    }
  }
  return t;
}

Tensor RandomTensor(DType dtype, absl::Span<const int64_t> shape,
                    uint32_t seed, float scale, bool outliers) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(n);
  for (float& v : values) v = normal(rng);
  if (outliers && n > 0) {
    std::uniform_int_distribution<int64_t> pick(0, n - 1);
    for (int k = 0; k < 3; ++k) values[pick(rng)] *= 40.0f;
  }
  return MakeTensor(dtype, shape, values);
}

std::vector<float> ToFloats(const TensorView& v) {
  std::vector<float> out(v.numel());
  for (int64_t i = 0; i < v.numel(); ++i) {
    switch (v.dtype()) {
      case DType::kF32:
        out[i] = v.data_as<float>()[i];
        break;
      case DType::kF16:
        out[i] = F16BitsToFloat(v.data_as<uint16_t>()[i]);
        break;
      case DType::kBF16:
        out[i] = Bf16BitsToFloat(v.data_as<uint16_t>()[i]);
        break;
      case DType::kF8E4M3FN:
        out[i] = E4m3fnBitsToFloat(v.data_as<uint8_t>()[i]);
        break;
      case DType::kI8:
        out[i] = v.data_as<int8_t>()[i];
        break;
      case DType::kI16:
        out[i] = v.data_as<int16_t>()[i];
        break;
      case DType::kI32:
        out[i] = static_cast<float>(v.data_as<int32_t>()[i]);
        break;
      case DType::kI64:
        out[i] = static_cast<float>(v.data_as<int64_t>()[i]);
        break;
      case DType::kU8:
      case DType::kBool:
        out[i] = v.data_as<uint8_t>()[i];
        break;
    }
  }
  return out;
}

std::vector<ObserverDTypeCase> ObserverDTypeCases() {
  std::vector<ObserverDTypeCase> cases;
  for (const std::string& name : RegisteredObserverNames()) {
    for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
      cases.emplace_back(name, d);
    }
  }
  return cases;
}

std::string ObserverDTypeCaseName(
    const ::testing::TestParamInfo<ObserverDTypeCase>& info) {
  return std::get<0>(info.param) + "_" +
         std::string(DTypeName(std::get<1>(info.param)));
}

bool SameBits(const TensorView& a, const TensorView& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

}  // namespace testing_util
}  // namespace qcal
