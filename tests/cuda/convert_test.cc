// Parity of the CUDA conversion kernels with the host functions of
// core/float_convert.h: identical bits for every input pattern.
#include "cuda/convert.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/float_convert.h"
#include "cuda/runtime.h"
#include "gtest/gtest.h"
#include "tests/cuda/cuda_test_util.h"

namespace qcal {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

// Runs Bf16BitsToFloatCuda over `in` and returns the device's output, whose
// buffer is one element longer than `in` and starts filled with a sentinel:
// the last element must come back untouched.
absl::StatusOr<std::vector<float>> ConvertOnDevice(
    const std::vector<uint16_t>& in) {
  const int64_t n = static_cast<int64_t>(in.size());
  absl::StatusOr<CudaStream> stream = CudaStream::Create();
  if (!stream.ok()) return stream.status();
  absl::StatusOr<DeviceBuffer> d_in =
      DeviceBuffer::Allocate(n * static_cast<int64_t>(sizeof(uint16_t)));
  if (!d_in.ok()) return d_in.status();
  absl::StatusOr<DeviceBuffer> d_out =
      DeviceBuffer::Allocate((n + 1) * static_cast<int64_t>(sizeof(float)));
  if (!d_out.ok()) return d_out.status();

  std::vector<float> out(in.size() + 1, -12345.0f);
  absl::Status status =
      d_in->CopyFromHost(in.data(), d_in->size_bytes(), stream->get());
  if (status.ok()) {
    status = d_out->CopyFromHost(out.data(), d_out->size_bytes(),
                                 stream->get());
  }
  if (status.ok()) {
    status = Bf16BitsToFloatCuda(d_in->data_as<const uint16_t>(),
                                 d_out->data_as<float>(), n, stream->get());
  }
  if (status.ok()) status = stream->Synchronize();
  if (status.ok()) {
    status = d_out->CopyToHost(out.data(), d_out->size_bytes(), stream->get());
  }
  if (!status.ok()) return status;
  return out;
}

TEST(Bf16BitsToFloatCudaTest, RejectsBadArgumentsWithoutDevice) {
  EXPECT_EQ(Bf16BitsToFloatCuda(nullptr, nullptr, -1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Bf16BitsToFloatCuda(nullptr, nullptr, 5, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  // Nothing to do: OK without touching the device.
  EXPECT_TRUE(Bf16BitsToFloatCuda(nullptr, nullptr, 0, nullptr).ok());
}

TEST(Bf16BitsToFloatCudaTest, MatchesHostForAllBitPatterns) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  std::vector<uint16_t> in(65536);
  for (uint32_t h = 0; h < 65536; ++h) in[h] = static_cast<uint16_t>(h);

  const absl::StatusOr<std::vector<float>> out = ConvertOnDevice(in);
  ASSERT_TRUE(out.ok()) << out.status();
  int mismatches = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    // Bits, not values: NaN payloads and the sign of zero must match too.
    const uint32_t want = Bits(Bf16BitsToFloat(static_cast<uint16_t>(h)));
    const uint32_t got = Bits((*out)[h]);
    if (got != want && ++mismatches <= 10) {
      ADD_FAILURE() << "bf16 0x" << std::hex << h << ": device 0x" << got
                    << ", host 0x" << want;
    }
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ((*out)[65536], -12345.0f) << "wrote past the end";
}

TEST(Bf16BitsToFloatCudaTest, LengthsThatAreNotMultiplesOfTheBlock) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  for (int64_t n : {1, 255, 257, 1001}) {
    std::vector<uint16_t> in(n);
    for (int64_t i = 0; i < n; ++i) {
      in[i] = static_cast<uint16_t>(0x3F80 + i * 37);  // from 1.0 upwards
    }
    const absl::StatusOr<std::vector<float>> out = ConvertOnDevice(in);
    ASSERT_TRUE(out.ok()) << out.status();
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(Bits((*out)[i]), Bits(Bf16BitsToFloat(in[i])))
          << "n=" << n << " i=" << i;
    }
    EXPECT_EQ((*out)[n], -12345.0f) << "n=" << n << ": wrote past the end";
  }
}

}  // namespace
}  // namespace qcal
