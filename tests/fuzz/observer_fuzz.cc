// Fuzz target: the observer entry points fed arbitrary args, shapes, dtypes
// and element bit patterns (NaN, Inf, subnormals, extremes). Any input must
// give qparams or an error, never a crash or a sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/quant_args.h"
#include "core/tensor.h"
#include "observers/observer.h"
#include "registry/registry.h"

namespace {

// Byte reader that yields zeros past the end.
struct Reader {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;
  uint8_t Byte() { return pos < size ? data[pos++] : 0; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qcal;
  Reader in{data, size};
  static const std::vector<std::string> names = RegisteredObserverNames();
  const std::string name = names[in.Byte() % names.size()];
  QuantizationArgs args;
  const Strategy strategies[] = {Strategy::kTensor, Strategy::kChannel,
                                 Strategy::kGroup,  Strategy::kTensorGroup,
                                 Strategy::kBlock,  Strategy::kToken};
  args.strategy = strategies[in.Byte() % 6];
  const uint8_t kind = in.Byte() % 8;
  const int int_bits[] = {1, 2, 4, 8, 12, 16, 32};
  if (kind == 7) {
    args.type = QuantType::kFloat;
    args.num_bits = (in.Byte() & 1) ? 4 : 8;
  } else {
    args.num_bits = int_bits[kind % 7];
  }
  const uint8_t flags = in.Byte();
  args.symmetric = (flags & 1) != 0;
  const int64_t group = 1 + in.Byte() % 20;
  if (*args.strategy == Strategy::kGroup ||
      *args.strategy == Strategy::kTensorGroup) {
    args.group_size = group;
  }
  if (*args.strategy == Strategy::kBlock) {
    args.block_structure = std::array<int64_t, 2>{1 + in.Byte() % 8,
                                                  1 + in.Byte() % 8};
  }
  if (flags & 16) {
    args.observer_kwargs["maxshrink"] = (1 + in.Byte() % 100) / 100.0;
    args.observer_kwargs["grid"] = 1 + in.Byte() % 150;
    args.observer_kwargs["patience"] = 1 + in.Byte() % 8;
    args.observer_kwargs["norm"] = (1 + in.Byte() % 40) / 10.0;
  }
  if (!args.Validate().ok()) return 0;
  auto observer = CreateObserver(name, args);
  if (!observer.ok()) return 0;
  ObserveOptions options;
  options.nonfinite =
      (flags & 2) ? NonFinitePolicy::kSkip : NonFinitePolicy::kError;
  options.exec.threads = (flags & 4) ? 2 : 1;
  options.tensor_name = "fuzz";
  (*observer)->set_options(options);

  const DType dtypes[] = {DType::kF32, DType::kF16, DType::kBF16};
  const DType dtype = dtypes[in.Byte() % 3];
  const int rank = 1 + in.Byte() % 3;
  std::vector<int64_t> shape;
  for (int d = 0; d < rank; ++d) shape.push_back(in.Byte() % 24);
  auto tensor = Tensor::Zeros(dtype, shape);
  if (!tensor.ok()) return 0;
  auto* bytes = static_cast<uint8_t*>(tensor->mutable_data());
  for (int64_t i = 0; i < tensor->nbytes(); ++i) bytes[i] = in.Byte();
  const TensorView x = tensor->view();

  // g_idx over the last dimension when asked for.
  Tensor g_idx;
  const TensorView* g_idx_view = nullptr;
  TensorView g_view;
  if ((flags & 8) && rank >= 1) {
    const int64_t cols = shape.back();
    auto g = Tensor::Zeros(DType::kI32, {cols});
    if (g.ok()) {
      g_idx = std::move(*g);
      for (int64_t c = 0; c < cols; ++c) {
        g_idx.mutable_data_as<int32_t>()[c] =
            static_cast<int32_t>(in.Byte() % 5) - 1;
      }
      g_view = g_idx.view();
      g_idx_view = &g_view;
    }
  }
  for (int round = 0; round < 2; ++round) {
    std::optional<float> global_scale;
    if (*args.strategy == Strategy::kTensorGroup) {
      auto g = (*observer)->GetGParam(x);
      if (g.ok()) global_scale = *g;
    }
    (void)(*observer)->Forward(x, g_idx_view, global_scale);
  }
  const int reduce[] = {static_cast<int>(in.Byte() % 4) - 1};
  (void)(*observer)->CalculateQParams(x, reduce, "fuzz_id");
  (void)(*observer)->CalculateQParams(x);
  (*observer)->Reset();
  return 0;
}
