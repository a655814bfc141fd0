// The base Observer (SPEC §7): turns observed weights or activations into
// quantization parameters, keeping running statistics per tensor id.
//
// The operations are those of llmcompressor's Observer in C++ form:
//   Forward                 forward(observed, g_idx, global_scale,
//                           should_calculate_gparam)
//   GetQParams / qparams    get_qparams(observed, g_idx, global_scale) /
//                           get_qparams() (the last result)
//   CalculateQParams        calculate_qparams(observed, reduce_dims,
//                           tensor_id, global_scale)
//   GetQParamsAlongDim      get_qparams_along_dim(observed, dim, tensor_id,
//                           global_scale)
//   GetGParam               get_gparam(observed) (tensor_group only)
//   PostCalculateQParams    post_calculate_qparams() (a no-op hook)
//   RecordObservedTokens    record_observed_tokens(batch)
//   Reset                   reset()
//
// How it computes. The observed tensor is cut into units by its strategy
// (core/layout.h); the backend of the tensor's device computes every unit's
// minimum and maximum in one pass (and, for MSE observers, the candidates'
// errors). Units are grouped into "calls" that mirror the seed's per-call
// structure: one call for tensor/channel/token, one per group column (tensor
// id "group_<j>") and one per block ("block_<i>_<j>"). A plugin turns the raw
// per-unit min/max into updated ones (moving average, running extremes, MSE
// search, ...) per call; the base class turns those into qparams.
//
// Thread safety: an Observer instance is NOT thread-safe; use one per thread
// (or lock). Different instances may be used concurrently, and CreateObserver
// and the registry are thread-safe.
#ifndef QCAL_OBSERVERS_OBSERVER_H_
#define QCAL_OBSERVERS_OBSERVER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/backend.h"
#include "core/layout.h"
#include "core/memory_budget.h"
#include "core/qparams.h"
#include "core/quant_args.h"
#include "core/tensor.h"

namespace qcal {

namespace internal_observers {
struct ColumnGroups;
}  // namespace internal_observers

// ObserveOptions are execution settings of an observer.
struct ObserveOptions {
  // What to do with NaN / +-Inf in observed tensors: an error naming the
  // tensor and the first bad index (default), or skip them (SPEC §9.5).
  NonFinitePolicy nonfinite = NonFinitePolicy::kError;
  // CPU threads for the kernels (<= 0: all cores).
  ExecOptions exec;
  // Name of the observed tensor, used in error messages.
  std::string tensor_name;
};

// GroupTensorId returns the tensor id of group `index` ("group_<index>"). The
// whole-tensor id is the empty string; group 0 does not share it (SPEC §9.1).
std::string GroupTensorId(int64_t index);
// BlockTensorId returns the tensor id of block (i, j) ("block_<i>_<j>").
std::string BlockTensorId(int64_t i, int64_t j);

// UnitRange is an arithmetic progression of grid unit indices: first,
// first + stride, ..., count of them. Every call's units have this form (a
// channel call walks the rows, a group call one grid column, a block call a
// single tile), so they are described rather than listed.
class UnitRange {
 public:
  class Iterator {
   public:
    Iterator(int64_t value, int64_t stride) : value_(value), stride_(stride) {}
    int64_t operator*() const { return value_; }
    Iterator& operator++() {
      value_ += stride_;
      return *this;
    }
    bool operator!=(const Iterator& other) const {
      return value_ != other.value_;
    }

   private:
    int64_t value_;
    int64_t stride_;
  };

  UnitRange() = default;
  UnitRange(int64_t first, int64_t stride, int64_t count)
      : first_(first), stride_(stride), count_(count) {}
  // The units 0, 1, ..., count - 1.
  static UnitRange Iota(int64_t count) { return UnitRange(0, 1, count); }
  // The single unit `unit`.
  static UnitRange Single(int64_t unit) { return UnitRange(unit, 1, 1); }

  int64_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  bool operator==(const UnitRange& other) const {
    return first_ == other.first_ && stride_ == other.stride_ &&
           count_ == other.count_;
  }
  int64_t operator[](int64_t k) const { return first_ + k * stride_; }
  Iterator begin() const { return Iterator(first_, stride_); }
  Iterator end() const { return Iterator(first_ + count_ * stride_, stride_); }

 private:
  int64_t first_ = 0;
  int64_t stride_ = 1;
  int64_t count_ = 0;
};

// ObserverCall is one seed-level calculate_qparams call: a tensor id, the
// units it covers (grid indices) and the shape of its statistics.
struct ObserverCall {
  std::string tensor_id;
  UnitRange units;
  Shape stat_shape;
};

// UnitStats holds a (min, max) pair per grid unit: an observation's values,
// shared with the running statistics of the tensor ids that observation
// created (so storing them copies nothing).
struct UnitStats {
  // Uninitialised: the min/max kernel writes every unit.
  explicit UnitStats(int64_t n)
      : min(new float[n]), max(new float[n]), size(n) {}
  std::unique_ptr<float[]> min;
  std::unique_ptr<float[]> max;
  int64_t size;
};

// Observation is what a plugin sees of one observed tensor.
struct Observation {
  TensorView x;  // contiguous 2-D view (a column-permuted copy under g_idx)
  TileGrid grid;
  FloatFormat format = FloatFormat::kF32;
  QuantSpec spec;  // the quantized type of the observer's args
  std::vector<ObserverCall> calls;
  // Raw minimum and maximum of every unit of the current observation (values
  // of `format`, grid order), held by `stats`. UpdateMinMax receives these
  // very arrays as min_io / max_io: a plugin that still needs the raw values
  // after writing its results reads them first.
  std::shared_ptr<UnitStats> stats;
  absl::Span<const float> min;
  absl::Span<const float> max;
  std::optional<float> global_scale;
  const BackendOps* backend = nullptr;
  ObserveOptions options;
  // Counts the per-unit working memory against the memory budget.
  MemoryReservation reservation;
};

// RunningMinMax is the running statistic of one tensor id: the values at
// positions `units` of a UnitStats (an earlier observation's, updated in
// place by later ones).
struct RunningMinMax {
  int64_t size() const { return units.size(); }
  float min(int64_t k) const { return store->min[units[k]]; }
  float max(int64_t k) const { return store->max[units[k]]; }

  Shape shape;
  std::shared_ptr<UnitStats> store;
  UnitRange units;
};

// ForwardResult is Forward's answer: the global scale when asked for one,
// otherwise the qparams (owned by the observer, valid until its next call).
struct ForwardResult {
  std::optional<float> global_scale;
  const QParams* qparams = nullptr;
};

// Observer is the base class of every observer plugin.
class Observer {
 public:
  virtual ~Observer() = default;
  Observer(const Observer&) = delete;
  Observer& operator=(const Observer&) = delete;

  // name is the registry name ("minmax", "mse", ...).
  const std::string& name() const { return name_; }
  const QuantizationArgs& args() const { return args_; }
  const ObserveOptions& options() const { return options_; }
  void set_options(ObserveOptions options) { options_ = std::move(options); }

  // Forward records tokens, then returns the global scale (when
  // `should_calculate_gparam`) or the qparams of `observed`. An empty tensor
  // is not observed (SPEC §9.6): nothing changes and the last qparams (or
  // empty ones) come back.
  absl::StatusOr<ForwardResult> Forward(
      const TensorView& observed, const TensorView* g_idx = nullptr,
      std::optional<float> global_scale = std::nullopt,
      bool should_calculate_gparam = false);

  // GetQParams computes the qparams of `observed` by its strategy (shapes of
  // SPEC §7: tensor [1], channel [rows, 1], group [rows, ceil(cols / gs)],
  // block [ceil(rows / bh), ceil(cols / bw)], token [tokens, 1]); scales of
  // the observed dtype, zero points of the zero-point dtype. `g_idx` (I32 or
  // I64, one entry per column) orders columns for the group strategies.
  absl::StatusOr<const QParams*> GetQParams(
      const TensorView& observed, const TensorView* g_idx = nullptr,
      std::optional<float> global_scale = std::nullopt);

  // qparams returns the last qparams computed, or nullptr.
  const QParams* qparams() const {
    return last_.has_value() ? &*last_ : nullptr;
  }

  // CalculateQParams reduces `observed` over `reduce_dims` (all dims when
  // empty) under `tensor_id`, as the seed's calculate_qparams; the result has
  // the observed shape with reduced dims of size 1 ([1] when all are
  // reduced).
  absl::StatusOr<QParams> CalculateQParams(
      const TensorView& observed, absl::Span<const int> reduce_dims = {},
      absl::string_view tensor_id = "",
      std::optional<float> global_scale = std::nullopt);

  // GetQParamsAlongDim keeps `dims` and reduces every other dimension.
  absl::StatusOr<QParams> GetQParamsAlongDim(
      const TensorView& observed, absl::Span<const int> dims,
      absl::string_view tensor_id = "",
      std::optional<float> global_scale = std::nullopt);

  // GetGParam returns the global scale of `observed` (SPEC §5); strategy
  // tensor_group only (FailedPrecondition otherwise).
  absl::StatusOr<float> GetGParam(const TensorView& observed);

  // PostCalculateQParams runs after every GetQParams; does nothing by default.
  virtual void PostCalculateQParams() {}

  // RecordObservedTokens adds the rows of a 2-D batch to the token count;
  // other ranks (and empty batches) leave it unchanged.
  void RecordObservedTokens(const TensorView& batch);

  // num_observed_tokens is the token count, or nullopt if never counted.
  std::optional<int64_t> num_observed_tokens() const { return num_tokens_; }

  // Reset clears running statistics, the token count and the last qparams.
  virtual void Reset();

  // running returns the running statistic of `tensor_id`, or nullptr.
  const RunningMinMax* running(absl::string_view tensor_id) const;

 protected:
  Observer(std::string name, QuantizationArgs args);

  // UpdateMinMax is the plugin's statistic. On entry `min_io` / `max_io`
  // hold the raw per-unit min/max of `obs` (often the very arrays obs.min /
  // obs.max view); on return, the updated min/max of every unit of every
  // call (grid order, values of obs.format).
  virtual absl::Status UpdateMinMax(const Observation& obs,
                                    absl::Span<float> min_io,
                                    absl::Span<float> max_io) = 0;

  // GParamMinMax returns the (min, max) the global scale is computed from,
  // for an observation of the whole tensor as one unit under tensor id "".
  // Default: UpdateMinMax's result (so a moving-average observer averages
  // it); an observer may override it (mse uses the plain min/max).
  virtual absl::StatusOr<std::pair<float, float>> GParamMinMax(
      const Observation& whole);

  // ApplyMovingAverage replaces each call's values with
  // running + c * (current - running) against the call's running statistic
  // and stores the result. The first observation of an id is stored as is
  // (by sharing obs.stats when min_io / max_io are its arrays).
  // With `one_disables` (minmax), c == 1 disables the running state: values
  // pass through and nothing is stored; mse has no such shortcut (the seed's
  // MovingAverageMSEObserver always averages, and SPEC §9 lists no change),
  // so with c == 1 it computes running + 1 * (current - running). A running
  // statistic whose shape differs is an error.
  absl::Status ApplyMovingAverage(const Observation& obs, double c,
                                  bool one_disables, absl::Span<float> min_io,
                                  absl::Span<float> max_io);

  // ApplyRunningExtremes replaces each call's values with the running
  // min of minima / max of maxima and stores them.
  absl::Status ApplyRunningExtremes(const Observation& obs,
                                    absl::Span<float> min_io,
                                    absl::Span<float> max_io);

 private:
  // Builds the observation of a 2-D view with its calls and computes the raw
  // per-unit min/max on the view's device.
  absl::Status Observe(const TensorView& x2d, const TileGrid& grid,
                       std::vector<ObserverCall> calls,
                       std::optional<float> global_scale,
                       const TensorView& original, const int64_t* column_perm,
                       Observation* obs);
  // The qparams of every unit of `obs` from obs.min / obs.max (after
  // UpdateMinMax has updated them).
  absl::StatusOr<QParams> UnitQParams(const Observation& obs,
                                      const Shape& shape) const;
  // UpdateMinMax on obs's own arrays, then the qparams of the result.
  absl::StatusOr<QParams> UpdatedQParams(const Observation& obs,
                                         const Shape& shape);
  absl::StatusOr<RunningMinMax*> RunningFor(const ObserverCall& call);
  // Replaces each call's values with combine(running, current) against the
  // call's running statistic (stored; a new statistic takes the current
  // values as they are), units in parallel.
  template <typename Combine>
  absl::Status UpdateRunning(const Observation& obs, absl::Span<float> min_io,
                             absl::Span<float> max_io, Combine combine);
  // GetQParams for a g_idx whose groups are not all group_size columns: each
  // group observed as its own call.
  absl::StatusOr<QParams> UnevenGroupQParams(const TensorView& observed,
                                             const TensorView& permuted,
                                             const internal_observers::ColumnGroups& groups,
                                             std::optional<float> global_scale);

  std::string name_;
  QuantizationArgs args_;
  ObserveOptions options_;
  std::map<std::string, RunningMinMax> running_;
  std::optional<int64_t> num_tokens_;
  std::optional<QParams> last_;
};

// CreateObserver builds the observer registered as `name` (or, when `name`
// is empty, as args.observer) for validated `args`. Unknown names are
// NotFound (listing the registered ones); invalid kwargs or args the math
// cannot compute (asymmetric fp4) are InvalidArgument / Unimplemented.
absl::StatusOr<std::unique_ptr<Observer>> CreateObserver(
    absl::string_view name, const QuantizationArgs& args);

// KwargsReader reads and validates an observer's kwargs: each Get* consumes
// one key; Finish fails on keys nobody asked for.
class KwargsReader {
 public:
  KwargsReader(absl::string_view observer, const ObserverKwargs& kwargs)
      : observer_(observer), kwargs_(kwargs) {}
  // A double in (lo, hi] (lo_inclusive: [lo, hi]).
  absl::StatusOr<double> GetDouble(absl::string_view key, double fallback,
                                   double lo, double hi, bool lo_inclusive);
  // An integer >= lo.
  absl::StatusOr<int64_t> GetInt(absl::string_view key, int64_t fallback,
                                 int64_t lo);
  absl::Status Finish() const;

 private:
  std::string observer_;
  const ObserverKwargs& kwargs_;
  std::vector<std::string> used_;
};

}  // namespace qcal

#endif  // QCAL_OBSERVERS_OBSERVER_H_
