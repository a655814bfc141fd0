#include "core/tensor.h"

#include "core/memory_budget.h"

#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace qcal {
namespace {

TEST(TensorViewTest, ContiguousShapeAndStrides) {
  std::vector<float> data(24);
  auto view = TensorView::Contiguous(data.data(), DType::kF32, {2, 3, 4});
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->rank(), 3);
  EXPECT_EQ(view->numel(), 24);
  EXPECT_EQ(view->nbytes(), 96);
  EXPECT_EQ(view->dim(-1), 4);
  EXPECT_EQ(std::vector<int64_t>(view->strides().begin(), view->strides().end()),
            (std::vector<int64_t>{12, 4, 1}));
  EXPECT_TRUE(view->is_contiguous());
  EXPECT_EQ(view->DebugString(), "F32[2, 3, 4] (cpu)");
}

TEST(TensorViewTest, ZeroDimAndEmpty) {
  float x = 1;
  auto scalar = TensorView::Contiguous(&x, DType::kF32, {});
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(scalar->numel(), 1);
  EXPECT_EQ(scalar->rank(), 0);
  auto empty = TensorView::Contiguous(nullptr, DType::kBF16, {0, 5});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  EXPECT_EQ(empty->nbytes(), 0);
  TensorView default_view;
  EXPECT_TRUE(default_view.empty());
}

TEST(TensorViewTest, RejectsBadShapes) {
  std::vector<float> data(4);
  EXPECT_FALSE(TensorView::Contiguous(data.data(), DType::kF32, {-1, 4}).ok());
  const int64_t big = int64_t{1} << 40;
  EXPECT_FALSE(
      TensorView::Contiguous(data.data(), DType::kF32, {big, big}).ok());
  // Element count fits, byte count does not.
  EXPECT_FALSE(TensorView::Contiguous(data.data(), DType::kI64,
                                      {int64_t{1} << 61})
                   .ok());
  // Overflowing shape with a zero dimension is still rejected.
  EXPECT_FALSE(
      TensorView::Contiguous(data.data(), DType::kF32, {0, big, big}).ok());
  std::vector<int64_t> deep(kMaxRank + 1, 1);
  EXPECT_FALSE(TensorView::Contiguous(data.data(), DType::kF32, deep).ok());
  std::vector<int64_t> max_rank(kMaxRank, 1);
  EXPECT_TRUE(TensorView::Contiguous(data.data(), DType::kF32, max_rank).ok());
  EXPECT_FALSE(TensorView::Contiguous(nullptr, DType::kF32, {2}).ok());
}

TEST(TensorViewTest, FromBufferChecksTheByteCount) {
  std::vector<uint8_t> bytes(12);
  EXPECT_TRUE(TensorView::FromBuffer(bytes, DType::kF32, {3}).ok());
  EXPECT_TRUE(TensorView::FromBuffer(bytes, DType::kBF16, {2, 3}).ok());
  auto too_big = TensorView::FromBuffer(bytes, DType::kF32, {4});
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.status().message().find("needs 16 bytes"),
            absl::string_view::npos)
      << too_big.status();
  EXPECT_FALSE(TensorView::FromBuffer(bytes, DType::kF32, {2}).ok());
}

TEST(TensorViewTest, StridedAndContiguity) {
  std::vector<float> data(12);
  for (int i = 0; i < 12; ++i) data[i] = static_cast<float>(i);
  // Transposed view of a [3, 4] matrix.
  auto t = TensorView::Strided(data.data(), DType::kF32, {4, 3}, {1, 4});
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->is_contiguous());
  EXPECT_FALSE(t->Reshape({12}).ok());
  auto copy = Tensor::CopyOf(*t);
  ASSERT_TRUE(copy.ok());
  // Row r of the transpose is column r of the original.
  EXPECT_EQ(copy->data_as<float>()[0], 0);
  EXPECT_EQ(copy->data_as<float>()[1], 4);
  EXPECT_EQ(copy->data_as<float>()[2], 8);
  EXPECT_EQ(copy->data_as<float>()[3], 1);
  EXPECT_FALSE(
      TensorView::Strided(data.data(), DType::kF32, {4, 3}, {1}).ok());
  EXPECT_FALSE(
      TensorView::Strided(data.data(), DType::kF32, {4, 3}, {-1, 4}).ok());
  const int64_t huge = std::numeric_limits<int64_t>::max() / 2;
  EXPECT_FALSE(
      TensorView::Strided(data.data(), DType::kF32, {4, 3}, {huge, 1}).ok());
  // Size-1 dimensions may carry any stride and still be contiguous.
  auto row = TensorView::Strided(data.data(), DType::kF32, {1, 4}, {99, 1});
  ASSERT_TRUE(row.ok());
  EXPECT_TRUE(row->is_contiguous());
}

TEST(TensorViewTest, ReshapeAs2DAndNarrow) {
  std::vector<uint16_t> data(2 * 3 * 4);
  auto v = TensorView::Contiguous(data.data(), DType::kBF16, {2, 3, 4});
  ASSERT_TRUE(v.ok());
  auto flat = v->As2D();
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(flat->dim(0), 6);
  EXPECT_EQ(flat->dim(1), 4);
  EXPECT_FALSE(v->Reshape({5, 5}).ok());
  auto cols = flat->Narrow(1, 1, 2);
  ASSERT_TRUE(cols.ok());
  EXPECT_EQ(cols->numel(), 12);
  EXPECT_FALSE(cols->is_contiguous());
  EXPECT_EQ(cols->data(), static_cast<const void*>(data.data() + 1));
  EXPECT_FALSE(flat->Narrow(1, 3, 2).ok());
  EXPECT_FALSE(flat->Narrow(2, 0, 1).ok());
  EXPECT_FALSE(flat->Narrow(0, -1, 1).ok());
  auto none = flat->Narrow(0, 6, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(TensorTest, ZerosIsZeroedAndAligned) {
  auto t = Tensor::Zeros(DType::kI32, {3, 5});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->numel(), 15);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data()) % 64, 0u);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(t->data_as<int32_t>()[i], 0);
  t->mutable_data_as<int32_t>()[7] = 42;
  EXPECT_EQ(t->view().data_as<int32_t>()[7], 42);
  auto empty = Tensor::Zeros(DType::kF32, {0});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->view().numel(), 0);
  EXPECT_FALSE(Tensor::Zeros(DType::kF32, {-3}).ok());
}

TEST(TensorTest, MemoryBudgetIsEnforcedAndReleased) {
  const int64_t before = TensorBytesInUse();
  SetTensorMemoryBudget(before + 4096);
  {
    auto a = Tensor::Zeros(DType::kF32, {512});  // 2048 bytes
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(TensorBytesInUse(), before + 2048);
    auto b = Tensor::Zeros(DType::kF32, {1024});  // 4096 more: over budget
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(b.status().message().find("F32[1024]"), absl::string_view::npos);
    EXPECT_NE(b.status().message().find("--memory_budget_mb"),
              absl::string_view::npos);
    Tensor moved = std::move(*a);  // moving keeps one reservation
    EXPECT_EQ(TensorBytesInUse(), before + 2048);
  }
  EXPECT_EQ(TensorBytesInUse(), before);  // released on destruction
  SetTensorMemoryBudget(0);
  EXPECT_TRUE(Tensor::Zeros(DType::kF32, {1 << 20}).ok());
  EXPECT_EQ(TensorBytesInUse(), before);
}

TEST(TensorTest, CopyOfRejectsDeviceViews) {
  float x = 0;
  auto v = TensorView::Contiguous(&x, DType::kF32, {1}, Device::kCuda);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(Tensor::CopyOf(*v).ok());
}

}  // namespace
}  // namespace qcal
