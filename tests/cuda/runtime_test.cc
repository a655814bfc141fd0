#include "cuda/runtime.h"

#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda_runtime_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cuda/cuda_test_util.h"

namespace qcal {
namespace {

using ::testing::HasSubstr;

// ------------------------------------------- no device needed for these

TEST(CudaStatusTest, SuccessIsOk) {
  EXPECT_TRUE(CudaStatus(cudaSuccess, "anything").ok());
}

TEST(CudaStatusTest, MessageNamesTheCallAndTheError) {
  const absl::Status status =
      CudaStatus(cudaErrorMemoryAllocation, "cudaMalloc(1024 bytes)");
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("cudaMalloc(1024 bytes)"));
  EXPECT_THAT(status.message(), HasSubstr("cudaErrorMemoryAllocation"));
  EXPECT_THAT(status.message(),
              HasSubstr(cudaGetErrorString(cudaErrorMemoryAllocation)));
}

TEST(CudaStatusTest, MapsCodes) {
  EXPECT_EQ(CudaStatus(cudaErrorNoDevice, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CudaStatus(cudaErrorInsufficientDriver, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CudaStatus(cudaErrorInvalidValue, "x").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CudaStatus(cudaErrorInvalidDevice, "x").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CudaStatus(cudaErrorNotSupported, "x").code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(CudaStatus(cudaErrorLaunchFailure, "x").code(),
            absl::StatusCode::kInternal);
}

TEST(CudaDeviceCountTest, WorksWithOrWithoutDevice) {
  // On machines without a GPU or driver this is 0, not an error.
  const absl::StatusOr<int> count = CudaDeviceCount();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_GE(*count, 0);

  const absl::StatusOr<CudaDeviceProbe> probe = ProbeCudaDevices();
  ASSERT_TRUE(probe.ok()) << probe.status();
  EXPECT_EQ(probe->device_count, *count);
  // A reason exactly when there is no device.
  EXPECT_EQ(probe->no_device_reason.empty(), *count > 0)
      << probe->no_device_reason;
}

TEST(CudaDeviceNameTest, RejectsDevicesOutOfRange) {
  const absl::StatusOr<int> count = CudaDeviceCount();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(CudaDeviceName(-1).status().code(),
            absl::StatusCode::kInvalidArgument);
  const absl::StatusOr<std::string> past_end = CudaDeviceName(*count);
  EXPECT_EQ(past_end.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(past_end.status().message(),
              HasSubstr("no CUDA device " + std::to_string(*count)));
}

TEST(DeviceBufferTest, RejectsNegativeSize) {
  const absl::StatusOr<DeviceBuffer> buffer = DeviceBuffer::Allocate(-1);
  EXPECT_EQ(buffer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(buffer.status().message(), HasSubstr("-1"));
}

TEST(DeviceBufferTest, ZeroBytesIsEmptyWithoutDevice) {
  absl::StatusOr<DeviceBuffer> buffer = DeviceBuffer::Allocate(0);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  EXPECT_EQ(buffer->data(), nullptr);
  EXPECT_EQ(buffer->size_bytes(), 0);
  // Copies of zero bytes succeed without touching CUDA; larger ones are
  // rejected before any CUDA call.
  EXPECT_TRUE(buffer->CopyFromHost(nullptr, 0, nullptr).ok());
  EXPECT_TRUE(buffer->CopyToHost(nullptr, 0, nullptr).ok());
  char byte = 0;
  EXPECT_EQ(buffer->CopyFromHost(&byte, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(buffer->CopyToHost(&byte, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(buffer->CopyToHost(&byte, -1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DeviceBufferTest, DefaultIsEmpty) {
  DeviceBuffer buffer;
  EXPECT_EQ(buffer.data(), nullptr);
  EXPECT_EQ(buffer.size_bytes(), 0);
  DeviceBuffer moved = std::move(buffer);
  EXPECT_EQ(moved.data(), nullptr);
}

TEST(PinnedHostBufferTest, RejectsNegativeSizeAndZeroIsEmpty) {
  const absl::StatusOr<PinnedHostBuffer> bad = PinnedHostBuffer::Allocate(-3);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("-3"));
  absl::StatusOr<PinnedHostBuffer> empty = PinnedHostBuffer::Allocate(0);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->data(), nullptr);
  EXPECT_EQ(empty->size_bytes(), 0);
}

// --------------------------------------------------- these need a device

TEST(CudaDeviceNameTest, NamesEveryDevice) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  const absl::StatusOr<int> count = CudaDeviceCount();
  ASSERT_TRUE(count.ok()) << count.status();
  for (int device = 0; device < *count; ++device) {
    const absl::StatusOr<std::string> name = CudaDeviceName(device);
    ASSERT_TRUE(name.ok()) << name.status();
    EXPECT_FALSE(name->empty());
  }
}

TEST(DeviceBufferTest, RoundTripsThroughTheDevice) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  absl::StatusOr<CudaStream> stream = CudaStream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();

  // An odd size, so nothing relies on a multiple of a word.
  std::vector<uint8_t> host(1001);
  std::iota(host.begin(), host.end(), uint8_t{7});
  const int64_t bytes = static_cast<int64_t>(host.size());
  absl::StatusOr<DeviceBuffer> buffer = DeviceBuffer::Allocate(bytes);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  EXPECT_NE(buffer->data(), nullptr);
  EXPECT_EQ(buffer->size_bytes(), bytes);
  ASSERT_TRUE(buffer->CopyFromHost(host.data(), bytes, stream->get()).ok());

  std::vector<uint8_t> back(host.size(), 0);
  ASSERT_TRUE(buffer->CopyToHost(back.data(), bytes, stream->get()).ok());
  EXPECT_EQ(back, host);

  // A partial copy, and one larger than the buffer.
  std::vector<uint8_t> prefix(10, 0);
  ASSERT_TRUE(buffer->CopyToHost(prefix.data(), 10, stream->get()).ok());
  EXPECT_EQ(prefix, std::vector<uint8_t>(host.begin(), host.begin() + 10));
  std::vector<uint8_t> too_big(host.size() + 1);
  EXPECT_EQ(buffer->CopyFromHost(too_big.data(), bytes + 1, stream->get())
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(stream->Synchronize().ok());
}

TEST(DeviceBufferTest, MoveTransfersOwnership) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  absl::StatusOr<DeviceBuffer> a = DeviceBuffer::Allocate(64);
  absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Allocate(128);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  void* const a_data = a->data();
  DeviceBuffer c = std::move(*a);
  EXPECT_EQ(c.data(), a_data);
  EXPECT_EQ(c.size_bytes(), 64);
  EXPECT_EQ(a->data(), nullptr);
  EXPECT_EQ(a->size_bytes(), 0);
  c = std::move(*b);  // Frees c's old allocation.
  EXPECT_EQ(c.size_bytes(), 128);
  EXPECT_EQ(b->data(), nullptr);
}

TEST(DeviceBufferTest, OutOfMemoryIsResourceExhausted) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  // 1 PiB: more than any device has.
  const absl::StatusOr<DeviceBuffer> huge =
      DeviceBuffer::Allocate(int64_t{1} << 50);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted)
      << huge.status();
  EXPECT_THAT(huge.status().message(), HasSubstr("cudaMalloc"));
  // The failure is not left behind for the next launch check.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(CudaStreamTest, CreateMoveAndSynchronize) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  absl::StatusOr<CudaStream> stream = CudaStream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  EXPECT_NE(stream->get(), nullptr);
  CudaStream moved = std::move(*stream);
  EXPECT_EQ(stream->get(), nullptr);
  EXPECT_TRUE(moved.Synchronize().ok());
}

TEST(PinnedHostBufferTest, HoldsDataAcrossACopyAndMoves) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  absl::StatusOr<CudaStream> stream = CudaStream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  absl::StatusOr<PinnedHostBuffer> pinned = PinnedHostBuffer::Allocate(999);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  ASSERT_NE(pinned->data(), nullptr);
  EXPECT_EQ(pinned->size_bytes(), 999);
  uint8_t* bytes = static_cast<uint8_t*>(pinned->data());
  for (int i = 0; i < 999; ++i) bytes[i] = static_cast<uint8_t>(i * 7);
  absl::StatusOr<DeviceBuffer> dev = DeviceBuffer::Allocate(999);
  ASSERT_TRUE(dev.ok()) << dev.status();
  ASSERT_TRUE(dev->CopyFromHost(pinned->data(), 999, stream->get()).ok());
  PinnedHostBuffer moved = std::move(*pinned);
  EXPECT_EQ(pinned->data(), nullptr);
  std::vector<uint8_t> back(999);
  ASSERT_TRUE(dev->CopyToHost(back.data(), 999, stream->get()).ok());
  for (int i = 0; i < 999; ++i) {
    ASSERT_EQ(back[i], static_cast<uint8_t>(i * 7)) << i;
  }
  EXPECT_EQ(static_cast<uint8_t*>(moved.data())[5], 35);
}

}  // namespace
}  // namespace qcal
