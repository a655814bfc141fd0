#include "observers/observer.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/element_access.h"
#include "core/parallel.h"
#include "core/status_macros.h"
#include "registry/registry.h"

namespace qcal {

std::string GroupTensorId(int64_t index) {
  return absl::StrCat("group_", index);
}

std::string BlockTensorId(int64_t i, int64_t j) {
  return absl::StrCat("block_", i, "_", j);
}

namespace internal_observers {

// ColumnGroups is the activation order of SPEC §7: columns stably sorted by
// group index, and the column range of each group in that order.
struct ColumnGroups {
  std::vector<int64_t> order;   // permuted column -> original column
  std::vector<int64_t> bounds;  // group k covers [bounds[k], bounds[k + 1])
  bool regular = false;         // every group has group_size columns (the
                                // last may be short): a plain TileGrid
};

}  // namespace internal_observers

using internal_observers::ColumnGroups;

namespace {

bool IsGroupStrategy(Strategy s) {
  return s == Strategy::kGroup || s == Strategy::kTensorGroup;
}

// Reads entry i of a 1-D I32/I64 tensor.
int64_t IndexAt(const TensorView& v, int64_t i) {
  return v.dtype() == DType::kI64 ? v.data_as<int64_t>()[i]
                                  : v.data_as<int32_t>()[i];
}

// ColumnGroupsFor returns nullopt when columns stay in order (no g_idx, or it
// contains -1). Otherwise group k is the k-th smallest distinct index, its
// size the count of that index, as torch.unique(return_counts=True) gives;
// there must be exactly ceil(cols / group_size) distinct indices (one per
// qparam column).
absl::StatusOr<std::optional<ColumnGroups>> ColumnGroupsFor(
    const TensorView& g_idx, int64_t cols, int64_t group_size,
    absl::string_view tensor_name) {
  if (g_idx.device() != Device::kCpu || g_idx.rank() != 1 ||
      (g_idx.dtype() != DType::kI32 && g_idx.dtype() != DType::kI64) ||
      !g_idx.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "g_idx for tensor '", tensor_name,
        "' must be a contiguous 1-D I32 or I64 CPU tensor, got ",
        g_idx.DebugString()));
  }
  if (g_idx.numel() != cols) {
    return absl::InvalidArgumentError(
        absl::StrCat("g_idx for tensor '", tensor_name, "' has ",
                     g_idx.numel(), " entries but the tensor has ", cols,
                     " columns"));
  }
  for (int64_t c = 0; c < cols; ++c) {
    if (IndexAt(g_idx, c) == -1) return std::nullopt;
  }
  const int64_t groups = (cols + group_size - 1) / group_size;
  ColumnGroups out;
  out.order.resize(cols);
  std::iota(out.order.begin(), out.order.end(), 0);
  std::stable_sort(out.order.begin(), out.order.end(),
                   [&](int64_t a, int64_t b) {
                     return IndexAt(g_idx, a) < IndexAt(g_idx, b);
                   });
  out.bounds.push_back(0);
  for (int64_t c = 1; c < cols; ++c) {
    if (IndexAt(g_idx, out.order[c]) != IndexAt(g_idx, out.order[c - 1])) {
      out.bounds.push_back(c);
    }
  }
  out.bounds.push_back(cols);
  const int64_t distinct = static_cast<int64_t>(out.bounds.size()) - 1;
  if (distinct != groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        "g_idx for tensor '", tensor_name, "' has ", distinct,
        " distinct groups, but ", cols, " columns in groups of ", group_size,
        " give ", groups, " qparam columns"));
  }
  out.regular = true;
  for (int64_t k = 0; k < groups; ++k) {
    const int64_t want = std::min(group_size, cols - k * group_size);
    if (out.bounds[k + 1] - out.bounds[k] != want) out.regular = false;
  }
  return std::optional<ColumnGroups>(std::move(out));
}

// A copy of the 2-D CPU view with columns in `order`.
absl::StatusOr<Tensor> PermuteColumns(const TensorView& x2d,
                                      const std::vector<int64_t>& order) {
  QCAL_ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(x2d.dtype(), x2d.shape()));
  const int64_t rows = x2d.dim(0), cols = x2d.dim(1);
  const int64_t size = DTypeSize(x2d.dtype());
  const uint8_t* src = static_cast<const uint8_t*>(x2d.data());
  uint8_t* dst = static_cast<uint8_t*>(out.mutable_data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      std::memcpy(dst + (r * cols + c) * size,
                  src + (r * cols + order[c]) * size, size);
    }
  }
  return out;
}

std::string IndexToString(int64_t flat, absl::Span<const int64_t> shape) {
  std::vector<int64_t> idx(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    const int64_t n = shape[d] > 0 ? shape[d] : 1;
    idx[d] = flat % n;
    flat /= n;
  }
  return absl::StrCat("[", absl::StrJoin(idx, ", "), "]");
}

float LoadObserved(const TensorView& v, int64_t flat) {
  switch (v.dtype()) {
    case DType::kF16:
      return LoadAs<FloatFormat::kF16>(v.data(), flat);
    case DType::kBF16:
      return LoadAs<FloatFormat::kBF16>(v.data(), flat);
    default:
      return LoadAs<FloatFormat::kF32>(v.data(), flat);
  }
}

}  // namespace

Observer::Observer(std::string name, QuantizationArgs args)
    : name_(std::move(name)), args_(std::move(args)) {}

absl::Status Observer::Observe(const TensorView& x2d, const TileGrid& grid,
                               std::vector<ObserverCall> calls,
                               std::optional<float> global_scale,
                               const TensorView& original,
                               const int64_t* column_perm, Observation* obs) {
  QCAL_ASSIGN_OR_RETURN(obs->format, FloatFormatOf(x2d.dtype()));
  QCAL_ASSIGN_OR_RETURN(obs->backend, GetBackend(x2d.device()));
  obs->x = x2d;
  obs->spec = MakeQuantSpec(args_);
  obs->grid = grid;
  obs->calls = std::move(calls);
  obs->global_scale = global_scale;
  obs->options = options_;
  const int64_t units = grid.num_units();
  // Raw and updated min/max of every unit (four floats per unit), and the
  // MSE search's best errors and scratch (about four more): count them.
  QCAL_ASSIGN_OR_RETURN(
      obs->reservation,
      MemoryReservation::Reserve(
          units * int64_t{8} * static_cast<int64_t>(sizeof(float)),
          absl::StrCat("the per-unit statistics of tensor '",
                       options_.tensor_name, "' (", units, " units)")));
  obs->stats = std::make_shared<UnitStats>(units);
  obs->min = absl::MakeConstSpan(obs->stats->min.get(), units);
  obs->max = absl::MakeConstSpan(obs->stats->max.get(), units);
  MinMaxRequest request;
  request.x = x2d;
  request.grid = grid;
  request.format = obs->format;
  request.nonfinite = options_.nonfinite;
  int64_t first_bad = -1;
  MinMaxOutput out{obs->stats->min.get(), obs->stats->max.get(), &first_bad};
  QCAL_RETURN_IF_ERROR(obs->backend->min_max(request, options_.exec, out));
  if (first_bad >= 0) {
    int64_t flat = first_bad;
    if (column_perm != nullptr) {
      // x2d holds some columns of the original [rows, original_cols] view,
      // column c of x2d being original column column_perm[c].
      const int64_t cols = x2d.dim(1);
      const int64_t original_cols = original.numel() / x2d.dim(0);
      flat = (first_bad / cols) * original_cols + column_perm[first_bad % cols];
    }
    std::string value;
    if (original.device() == Device::kCpu) {
      value = absl::StrCat(" (", LoadObserved(original, flat), ")");
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", options_.tensor_name, "' ", original.DebugString(),
        " has a non-finite value", value, " at index ",
        IndexToString(flat, original.shape()),
        "; observing it would give NaN qparams (allow non-finite values to "
        "skip them)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<QParams> Observer::UnitQParams(const Observation& obs,
                                              const Shape& shape) const {
  const absl::Span<const float> min = obs.min, max = obs.max;
  QParams qp;
  QCAL_ASSIGN_OR_RETURN(qp.scale, Tensor::Zeros(DTypeOf(obs.format), shape));
  QCAL_ASSIGN_OR_RETURN(qp.zero_point,
                        Tensor::Zeros(args_.ZeroPointDType(), shape));
  if (qp.scale.numel() != static_cast<int64_t>(min.size())) {
    return absl::InternalError("qparam shape does not match the units");
  }
  const QuantSpec spec = MakeQuantSpec(args_);
  const bool has_g = obs.global_scale.has_value();
  const float g = obs.global_scale.value_or(1.0f);
  // Independent per unit: split over the threads (results do not depend on
  // the split).
  ParallelFor(static_cast<int64_t>(min.size()), options_.exec.threads, 4096,
              [&](int64_t begin, int64_t end) {
                DispatchFormat(obs.format, [&](auto f) {
                  constexpr FloatFormat F = decltype(f)::value;
                  for (int64_t u = begin; u < end; ++u) {
                    const ScalarQParams p =
                        ComputeQParams<F>(min[u], max[u], spec, has_g, g);
                    StoreAs<F>(qp.scale.mutable_data(), u, p.scale);
                    StoreZeroPoint(qp.zero_point.mutable_data(), u, p.zero_point,
                                   spec.zp_kind);
                  }
                });
              });
  return qp;
}

absl::StatusOr<QParams> Observer::UpdatedQParams(const Observation& obs,
                                                 const Shape& shape) {
  const int64_t n = obs.stats->size;
  QCAL_RETURN_IF_ERROR(UpdateMinMax(obs,
                                    absl::MakeSpan(obs.stats->min.get(), n),
                                    absl::MakeSpan(obs.stats->max.get(), n)));
  return UnitQParams(obs, shape);
}

absl::StatusOr<ForwardResult> Observer::Forward(
    const TensorView& observed, const TensorView* g_idx,
    std::optional<float> global_scale, bool should_calculate_gparam) {
  ForwardResult result;
  if (observed.empty()) {
    result.qparams = qparams();
    return result;
  }
  RecordObservedTokens(observed);
  if (should_calculate_gparam) {
    QCAL_ASSIGN_OR_RETURN(result.global_scale, GetGParam(observed));
    return result;
  }
  QCAL_ASSIGN_OR_RETURN(result.qparams,
                        GetQParams(observed, g_idx, global_scale));
  return result;
}

absl::StatusOr<const QParams*> Observer::GetQParams(
    const TensorView& observed, const TensorView* g_idx,
    std::optional<float> global_scale) {
  if (observed.empty()) return qparams();
  QCAL_RETURN_IF_ERROR(FloatFormatOf(observed.dtype()).status());
  QCAL_RETURN_IF_ERROR(CheckArgsComputable(args_));
  const Strategy strategy = args_.strategy_or_tensor();
  QCAL_ASSIGN_OR_RETURN(TensorView x2d, View2DForStrategy(observed, args_));

  // Activation ordering: observe a column-permuted copy.
  std::optional<ColumnGroups> groups;
  Tensor permuted;
  if (g_idx != nullptr && IsGroupStrategy(strategy)) {
    QCAL_ASSIGN_OR_RETURN(groups, ColumnGroupsFor(*g_idx, x2d.dim(1),
                                                  *args_.group_size,
                                                  options_.tensor_name));
    if (groups.has_value()) {
      if (x2d.device() != Device::kCpu) {
        return absl::UnimplementedError(
            "g_idx ordering is implemented for CPU tensors only");
      }
      QCAL_ASSIGN_OR_RETURN(permuted, PermuteColumns(x2d, groups->order));
      x2d = permuted.view();
      if (!groups->regular) {
        QCAL_ASSIGN_OR_RETURN(QParams qp,
                              UnevenGroupQParams(observed, x2d, *groups,
                                                 global_scale));
        last_ = std::move(qp);
        PostCalculateQParams();
        return &*last_;
      }
    }
  }
  QCAL_ASSIGN_OR_RETURN(TileGrid grid, TileGridForStrategy(x2d, args_));

  std::vector<ObserverCall> calls;
  switch (strategy) {
    case Strategy::kTensor:
      calls.push_back({"", UnitRange::Single(0), {}});
      break;
    case Strategy::kChannel:
    case Strategy::kToken: {
      calls.push_back(
          {"", UnitRange::Iota(grid.num_units()), {grid.rows, 1}});
      break;
    }
    case Strategy::kGroup:
    case Strategy::kTensorGroup:
      for (int64_t j = 0; j < grid.grid_cols(); ++j) {
        calls.push_back(
            {GroupTensorId(j),
             UnitRange(j, grid.grid_cols(), grid.grid_rows()),
             {grid.rows, 1}});
      }
      break;
    case Strategy::kBlock:
      for (int64_t i = 0; i < grid.grid_rows(); ++i) {
        for (int64_t j = 0; j < grid.grid_cols(); ++j) {
          calls.push_back({BlockTensorId(i, j),
                           UnitRange::Single(i * grid.grid_cols() + j), {}});
        }
      }
      break;
  }

  Observation obs;
  QCAL_RETURN_IF_ERROR(Observe(x2d, grid, std::move(calls), global_scale,
                               observed,
                               groups.has_value() ? groups->order.data()
                                                  : nullptr,
                               &obs));
  QCAL_ASSIGN_OR_RETURN(QParams qp, UpdatedQParams(
                                        obs, QParamShape(strategy, grid)));
  last_ = std::move(qp);
  PostCalculateQParams();
  return &*last_;
}

absl::StatusOr<QParams> Observer::UnevenGroupQParams(
    const TensorView& observed, const TensorView& permuted,
    const internal_observers::ColumnGroups& groups,
    std::optional<float> global_scale) {
  const int64_t rows = permuted.dim(0);
  const int64_t num_groups = static_cast<int64_t>(groups.bounds.size()) - 1;
  QParams out;
  QCAL_ASSIGN_OR_RETURN(out.scale,
                        Tensor::Zeros(permuted.dtype(), {rows, num_groups}));
  QCAL_ASSIGN_OR_RETURN(out.zero_point, Tensor::Zeros(args_.ZeroPointDType(),
                                                      {rows, num_groups}));
  const int64_t scale_size = DTypeSize(out.scale.dtype());
  const int64_t zp_size = DTypeSize(out.zero_point.dtype());
  for (int64_t k = 0; k < num_groups; ++k) {
    // Group k alone, as a contiguous [rows, count] tensor: one call.
    const int64_t begin = groups.bounds[k], count = groups.bounds[k + 1] - begin;
    QCAL_ASSIGN_OR_RETURN(TensorView columns,
                          permuted.Narrow(1, begin, count));
    QCAL_ASSIGN_OR_RETURN(Tensor group, Tensor::CopyOf(columns));
    TileGrid grid;
    grid.rows = rows;
    grid.cols = count;
    grid.tile_rows = 1;
    grid.tile_cols = count;
    ObserverCall call{GroupTensorId(k), UnitRange::Iota(rows), {rows, 1}};
    Observation obs;
    QCAL_RETURN_IF_ERROR(Observe(group.view(), grid, {std::move(call)},
                                 global_scale, observed,
                                 groups.order.data() + begin, &obs));
    QCAL_ASSIGN_OR_RETURN(QParams part, UpdatedQParams(obs, {rows}));
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(static_cast<uint8_t*>(out.scale.mutable_data()) +
                      (r * num_groups + k) * scale_size,
                  static_cast<const uint8_t*>(part.scale.data()) + r * scale_size,
                  scale_size);
      std::memcpy(static_cast<uint8_t*>(out.zero_point.mutable_data()) +
                      (r * num_groups + k) * zp_size,
                  static_cast<const uint8_t*>(part.zero_point.data()) +
                      r * zp_size,
                  zp_size);
    }
  }
  return out;
}

absl::StatusOr<QParams> Observer::CalculateQParams(
    const TensorView& observed, absl::Span<const int> reduce_dims,
    absl::string_view tensor_id, std::optional<float> global_scale) {
  if (observed.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", options_.tensor_name, "' ", observed.DebugString(),
        " is empty: there is nothing to calculate qparams from"));
  }
  QCAL_RETURN_IF_ERROR(CheckArgsComputable(args_));
  if (!observed.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "observed tensor ", observed.DebugString(), " must be contiguous"));
  }
  const int rank = observed.rank();
  std::set<int> reduced;
  for (int d : reduce_dims) {
    const int dd = d < 0 ? d + rank : d;
    if (dd < 0 || dd >= rank) {
      return absl::InvalidArgumentError(absl::StrCat(
          "reduce dimension ", d, " out of range for ",
          observed.DebugString()));
    }
    reduced.insert(dd);
  }
  if (reduce_dims.empty()) {
    for (int d = 0; d < rank; ++d) reduced.insert(d);
  }
  Shape stat_shape;
  Shape kept_dims, reduced_dims;
  int64_t kept = 1, red = 1;
  bool prefix = true;
  for (int d = 0; d < rank; ++d) {
    if (reduced.count(d)) {
      reduced_dims.push_back(d);
      red *= observed.dim(d);
      stat_shape.push_back(1);
    } else {
      if (!reduced_dims.empty()) prefix = false;
      kept_dims.push_back(d);
      kept *= observed.dim(d);
      stat_shape.push_back(observed.dim(d));
    }
  }
  Tensor moved;
  TensorView x2d;
  if (prefix) {
    QCAL_ASSIGN_OR_RETURN(x2d, observed.Reshape({kept, red}));
  } else {
    if (observed.device() != Device::kCpu) {
      return absl::UnimplementedError(
          "reducing leading dimensions is implemented for CPU tensors only");
    }
    Shape shape, strides;
    for (int64_t d : kept_dims) {
      shape.push_back(observed.dim(d));
      strides.push_back(observed.strides()[d]);
    }
    for (int64_t d : reduced_dims) {
      shape.push_back(observed.dim(d));
      strides.push_back(observed.strides()[d]);
    }
    QCAL_ASSIGN_OR_RETURN(TensorView v,
                          TensorView::Strided(observed.data(), observed.dtype(),
                                              shape, strides));
    QCAL_ASSIGN_OR_RETURN(moved, Tensor::CopyOf(v));
    QCAL_ASSIGN_OR_RETURN(x2d, moved.view().Reshape({kept, red}));
  }
  TileGrid grid;
  grid.rows = kept;
  grid.cols = red;
  grid.tile_rows = 1;
  grid.tile_cols = red;
  ObserverCall call{std::string(tensor_id), UnitRange::Iota(kept), {}};
  // All reduced: a 0-d statistic, as torch.aminmax gives.
  call.stat_shape = kept_dims.empty() ? Shape{} : stat_shape;
  Observation obs;
  QCAL_RETURN_IF_ERROR(Observe(x2d, grid, {std::move(call)}, global_scale,
                               observed, nullptr, &obs));
  return UpdatedQParams(obs, kept_dims.empty() ? Shape{1} : stat_shape);
}

absl::StatusOr<QParams> Observer::GetQParamsAlongDim(
    const TensorView& observed, absl::Span<const int> dims,
    absl::string_view tensor_id, std::optional<float> global_scale) {
  std::set<int> keep;
  for (int d : dims) {
    const int dd = d < 0 ? d + observed.rank() : d;
    if (dd < 0 || dd >= observed.rank()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dimension ", d, " out of range for ", observed.DebugString()));
    }
    keep.insert(dd);
  }
  std::vector<int> reduce;
  for (int d = 0; d < observed.rank(); ++d) {
    if (!keep.count(d)) reduce.push_back(d);
  }
  if (reduce.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "get_qparams_along_dim keeps every dimension of ",
        observed.DebugString(), "; nothing to reduce"));
  }
  return CalculateQParams(observed, reduce, tensor_id, global_scale);
}

absl::StatusOr<float> Observer::GetGParam(const TensorView& observed) {
  if (args_.strategy_or_tensor() != Strategy::kTensorGroup) {
    return absl::FailedPreconditionError(absl::StrCat(
        "observer '", name_, "': a global scale exists for strategy "
        "\"tensor_group\" only, not \"",
        StrategyName(args_.strategy_or_tensor()), "\""));
  }
  if (observed.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", options_.tensor_name,
        "' is empty: there is no global scale to compute"));
  }
  if (!observed.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "observed tensor ", observed.DebugString(), " must be contiguous"));
  }
  QCAL_ASSIGN_OR_RETURN(TensorView x2d, observed.As2D());
  TileGrid grid;
  grid.rows = x2d.dim(0);
  grid.cols = x2d.dim(1);
  grid.tile_rows = grid.rows;
  grid.tile_cols = grid.cols;
  Observation obs;
  QCAL_RETURN_IF_ERROR(
      Observe(x2d, grid, {{"", UnitRange::Single(0), {}}}, std::nullopt,
              observed, nullptr, &obs));
  QCAL_ASSIGN_OR_RETURN(auto min_max, GParamMinMax(obs));
  return GlobalScale(min_max.first, min_max.second);
}

absl::StatusOr<std::pair<float, float>> Observer::GParamMinMax(
    const Observation& whole) {
  float mn = whole.min[0], mx = whole.max[0];
  QCAL_RETURN_IF_ERROR(UpdateMinMax(whole, absl::MakeSpan(&mn, 1),
                                    absl::MakeSpan(&mx, 1)));
  return std::make_pair(mn, mx);
}

void Observer::RecordObservedTokens(const TensorView& batch) {
  if (batch.rank() != 2 || batch.empty()) return;
  num_tokens_ = num_tokens_.value_or(0) + batch.dim(0);
}

void Observer::Reset() {
  running_.clear();
  num_tokens_.reset();
  last_.reset();
}

const RunningMinMax* Observer::running(absl::string_view tensor_id) const {
  auto it = running_.find(std::string(tensor_id));
  return it == running_.end() ? nullptr : &it->second;
}

absl::StatusOr<RunningMinMax*> Observer::RunningFor(const ObserverCall& call) {
  auto it = running_.find(call.tensor_id);
  if (it == running_.end()) return nullptr;
  if (it->second.shape != call.stat_shape ||
      it->second.units.size() != call.units.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "observer '", name_, "': the running statistic of tensor id \"",
        call.tensor_id, "\" has shape ", ShapeToString(it->second.shape),
        " but tensor '", options_.tensor_name, "' gives shape ",
        ShapeToString(call.stat_shape),
        " (observations of one observer must keep their unit layout; reset "
        "the observer to start over)"));
  }
  return &it->second;
}

template <typename Combine>
absl::Status Observer::UpdateRunning(const Observation& obs,
                                     absl::Span<float> min_io,
                                     absl::Span<float> max_io,
                                     Combine combine) {
  // Serially: find each call's running statistic. A new one takes the
  // current values as they are: it shares obs.stats when min_io / max_io are
  // its arrays (nothing to copy), else a copy of them.
  const bool io_is_obs = obs.stats != nullptr &&
                         min_io.data() == obs.stats->min.get() &&
                         max_io.data() == obs.stats->max.get();
  std::shared_ptr<UnitStats> fresh_store;
  struct Job {
    const ObserverCall* call;
    RunningMinMax* run;
  };
  // Look every statistic up before changing any (an error leaves all as
  // they were).
  std::vector<RunningMinMax*> found(obs.calls.size());
  for (size_t i = 0; i < obs.calls.size(); ++i) {
    QCAL_ASSIGN_OR_RETURN(found[i], RunningFor(obs.calls[i]));
  }
  std::vector<Job> jobs;  // the calls with an earlier statistic
  jobs.reserve(obs.calls.size());
  for (size_t i = 0; i < obs.calls.size(); ++i) {
    const ObserverCall& call = obs.calls[i];
    RunningMinMax* run = found[i];
    if (run != nullptr) {
      jobs.push_back({&call, run});
      continue;
    }
    if (fresh_store == nullptr) {
      if (io_is_obs) {
        fresh_store = obs.stats;
      } else {
        const int64_t n = static_cast<int64_t>(min_io.size());
        fresh_store = std::make_shared<UnitStats>(n);
        std::copy(min_io.begin(), min_io.end(), fresh_store->min.get());
        std::copy(max_io.begin(), max_io.end(), fresh_store->max.get());
      }
    }
    run = &running_[call.tensor_id];
    run->shape = call.stat_shape;
    run->store = fresh_store;
    run->units = call.units;
  }
  if (jobs.empty()) return absl::OkStatus();

  // In parallel: every unit is independent.
  const int threads = options_.exec.threads;
  const int64_t num_units = static_cast<int64_t>(min_io.size());
  // The usual case, the same layout observed again: every call has a
  // statistic, all in one store at the call's own positions, the calls
  // covering every unit. Then store and values line up unit for unit.
  bool aligned = jobs.size() == obs.calls.size() &&
                 jobs[0].run->store->size == num_units;
  int64_t covered = 0;
  for (size_t j = 0; aligned && j < jobs.size(); ++j) {
    aligned = jobs[j].run->store == jobs[0].run->store &&
              jobs[j].run->units == jobs[j].call->units;
    covered += jobs[j].call->units.size();
  }
  if (aligned && covered == num_units) {
    float* run_min = jobs[0].run->store->min.get();
    float* run_max = jobs[0].run->store->max.get();
    ParallelFor(num_units, threads, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        combine(&run_min[u], &run_max[u], min_io[u], max_io[u]);
        min_io[u] = run_min[u];
        max_io[u] = run_max[u];
      }
    });
    return absl::OkStatus();
  }
  // Otherwise: a work item is one chunk of positions [k, k + kChunk) of one
  // call; items are listed chunk by chunk, call by call within a chunk, so
  // that a thread's consecutive items touch neighbouring units (group calls
  // interleave: unit i * groups + j is position i of call j).
  constexpr int64_t kChunk = 1024;
  int64_t longest = 0;
  for (const Job& job : jobs) {
    longest = std::max(longest, job.call->units.size());
  }
  std::vector<std::pair<size_t, int64_t>> items;  // (job, first position)
  for (int64_t k = 0; k < longest; k += kChunk) {
    for (size_t j = 0; j < jobs.size(); ++j) {
      if (k < jobs[j].call->units.size()) items.emplace_back(j, k);
    }
  }
  ParallelFor(static_cast<int64_t>(items.size()), threads, 1,
              [&](int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i) {
                  const Job& job = jobs[items[i].first];
                  const UnitRange& units = job.call->units;
                  const UnitRange& at = job.run->units;
                  float* run_min = job.run->store->min.get();
                  float* run_max = job.run->store->max.get();
                  const int64_t k1 =
                      std::min(units.size(), items[i].second + kChunk);
                  for (int64_t k = items[i].second; k < k1; ++k) {
                    const int64_t u = units[k], p = at[k];
                    combine(&run_min[p], &run_max[p], min_io[u], max_io[u]);
                    min_io[u] = run_min[p];
                    max_io[u] = run_max[p];
                  }
                }
              });
  return absl::OkStatus();
}

absl::Status Observer::ApplyMovingAverage(const Observation& obs, double c,
                                          bool one_disables,
                                          absl::Span<float> min_io,
                                          absl::Span<float> max_io) {
  // minmax's "early stopping": a constant of 1 keeps no running state.
  if (one_disables && c == 1.0) return absl::OkStatus();
  const float cf = static_cast<float>(c);
  return DispatchFormat(obs.format, [&](auto f) {
    constexpr FloatFormat F = decltype(f)::value;
    return UpdateRunning(obs, min_io, max_io,
                         [cf](float* run_min, float* run_max, float cur_min,
                              float cur_max) {
                           *run_min = MovingAverage<F>(*run_min, cur_min, cf);
                           *run_max = MovingAverage<F>(*run_max, cur_max, cf);
                         });
  });
}

absl::Status Observer::ApplyRunningExtremes(const Observation& obs,
                                            absl::Span<float> min_io,
                                            absl::Span<float> max_io) {
  return UpdateRunning(obs, min_io, max_io,
                       [](float* run_min, float* run_max, float cur_min,
                          float cur_max) {
                         *run_min = MinF(*run_min, cur_min);
                         *run_max = MaxF(*run_max, cur_max);
                       });
}

absl::StatusOr<std::unique_ptr<Observer>> CreateObserver(
    absl::string_view name, const QuantizationArgs& args) {
  std::string chosen(name);
  if (chosen.empty()) {
    if (!args.observer.has_value()) {
      return absl::InvalidArgumentError(
          "no observer named and the args have none (dynamic args are "
          "computed at run time; name an observer to calibrate them)");
    }
    chosen = *args.observer;
  }
  QCAL_ASSIGN_OR_RETURN(ObserverFactory factory, FindObserverFactory(chosen));
  QCAL_RETURN_IF_ERROR(CheckArgsComputable(args));
  return factory(args);
}

absl::StatusOr<double> KwargsReader::GetDouble(absl::string_view key,
                                               double fallback, double lo,
                                               double hi, bool lo_inclusive) {
  used_.emplace_back(key);
  auto it = kwargs_.find(std::string(key));
  if (it == kwargs_.end()) return fallback;
  const double v = it->second;
  const bool ok = (lo_inclusive ? v >= lo : v > lo) && v <= hi;
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "observer '", observer_, "': kwarg ", key, " = ", v, " is out of range ",
        lo_inclusive ? "[" : "(", lo, ", ", hi, "]"));
  }
  return v;
}

absl::StatusOr<int64_t> KwargsReader::GetInt(absl::string_view key,
                                             int64_t fallback, int64_t lo) {
  used_.emplace_back(key);
  auto it = kwargs_.find(std::string(key));
  if (it == kwargs_.end()) return fallback;
  const double v = it->second;
  if (v != std::floor(v) || v < static_cast<double>(lo) || v > 1e15) {
    return absl::InvalidArgumentError(
        absl::StrCat("observer '", observer_, "': kwarg ", key, " = ", v,
                     " must be an integer >= ", lo));
  }
  return static_cast<int64_t>(v);
}

absl::Status KwargsReader::Finish() const {
  for (const auto& [key, value] : kwargs_) {
    if (std::find(used_.begin(), used_.end(), key) == used_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "observer '", observer_, "' has no kwarg \"", key, "\" (it takes ",
          used_.empty() ? std::string("none") : absl::StrJoin(used_, ", "),
          ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace qcal
