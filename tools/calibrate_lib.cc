#include "tools/calibrate_lib.h"

#if defined(__GLIBC__)
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/cpu/simd_kernels.h"
#include "core/element_access.h"
#include "core/layout.h"
#include "core/parallel.h"
#include "core/quant_math.h"
#include "core/safetensors.h"
#include "core/status_macros.h"
#include "observers/observer.h"
#include "tools/device_upload.h"

namespace qcal {

// --------------------------------------------------------------- statistics

absl::StatusOr<TensorStats> ComputeTensorStats(
    const TensorView& x, const QParams& qparams,
    std::optional<float> global_scale, const QuantizationArgs& args,
    int threads, int64_t max_elements) {
  QCAL_ASSIGN_OR_RETURN(FloatFormat format, FloatFormatOf(x.dtype()));
  if (qparams.scale.dtype() != x.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scale dtype ", DTypeName(qparams.scale.dtype()),
        " differs from the tensor's ", DTypeName(x.dtype())));
  }
  QCAL_ASSIGN_OR_RETURN(TensorView x2d, View2DForStrategy(x, args));
  QCAL_ASSIGN_OR_RETURN(TileGrid grid, TileGridForStrategy(x2d, args));
  QCAL_RETURN_IF_ERROR(ZeroPointKindOf(qparams.zero_point.dtype()).status());
  const QuantSpec spec = MakeQuantSpec(args);
  const int64_t units = grid.num_units();
  if (qparams.scale.numel() != units || qparams.zero_point.numel() != units) {
    return absl::InvalidArgumentError(absl::StrCat(
        "qparams ", qparams.scale.view().DebugString(), " do not fit ",
        x.DebugString(), " (", units, " units)"));
  }

  TensorStats stats;
  stats.scale_min = std::numeric_limits<float>::infinity();
  stats.scale_max = -std::numeric_limits<float>::infinity();
  // The scale range, in fixed chunks (min and max do not depend on the
  // split).
  constexpr int64_t kScaleChunk = 1 << 16;
  const int64_t scale_chunks = (units + kScaleChunk - 1) / kScaleChunk;
  std::vector<float> chunk_min(scale_chunks), chunk_max(scale_chunks);
  ParallelFor(scale_chunks, threads, 1, [&](int64_t begin, int64_t end) {
    DispatchFormat(format, [&](auto f) {
      constexpr FloatFormat F = decltype(f)::value;
      for (int64_t k = begin; k < end; ++k) {
        float lo = std::numeric_limits<float>::infinity(), hi = -lo;
        const int64_t u1 = std::min(units, (k + 1) * kScaleChunk);
        for (int64_t u = k * kScaleChunk; u < u1; ++u) {
          const float scale = LoadAs<F>(qparams.scale.data(), u);
          lo = std::min(lo, scale);
          hi = std::max(hi, scale);
        }
        chunk_min[k] = lo;
        chunk_max[k] = hi;
      }
    });
  });
  for (int64_t k = 0; k < scale_chunks; ++k) {
    stats.scale_min = std::min(stats.scale_min, chunk_min[k]);
    stats.scale_max = std::max(stats.scale_max, chunk_max[k]);
  }

  // The rows to evaluate: all of them, or every `stride`-th band of rows
  // (bands of a unit's height, so that blocks stay whole; single rows for
  // the one-unit tensor strategy) so that at most about max_elements
  // elements are fake-quantized.
  const int64_t rows = grid.rows, cols = grid.cols;
  const bool single_unit = units == 1;
  const int64_t band = single_unit ? 1 : grid.tile_rows;
  const int64_t bands = rows > 0 ? (rows + band - 1) / band : 0;
  int64_t stride = 1;
  if (max_elements > 0 && rows * cols > max_elements && cols > 0) {
    const int64_t wanted = std::max<int64_t>(1, max_elements / (band * cols));
    stride = (bands + wanted - 1) / wanted;
  }
  stats.rows_total = rows;

  // One vectorised pass per evaluated range (core/cpu/simd_kernels.h): every
  // element is fake-quantized with its unit's qparams exactly as
  // FakeQuantize / QuantizeToGrid do, sums kept per row in a fixed lane
  // order and rows added in order, so the numbers do not depend on the
  // thread count.
  std::vector<QuantErrorRowStats> row_stats;
  ExecOptions exec;
  exec.threads = threads;
  auto add_rows = [&]() {
    for (const QuantErrorRowStats& r : row_stats) {
      stats.signal_sum += r.signal;
      stats.noise_sum += r.noise;
      stats.clipped += r.clipped;
      stats.finite += r.finite;
    }
  };
  if (stride == 1) {
    row_stats.assign(rows, QuantErrorRowStats{});
    QCAL_RETURN_IF_ERROR(SimdQuantErrorStats(
        x2d, grid, spec, qparams.scale.view(), qparams.zero_point.view(),
        global_scale, exec, absl::MakeSpan(row_stats)));
    add_rows();
    stats.rows_used = rows;
  } else {
    // The qparams as [grid rows, grid cols] (tensor: one unit).
    QCAL_ASSIGN_OR_RETURN(TensorView scale2d, qparams.scale.view().Reshape(
                                                  {grid.grid_rows(),
                                                   grid.grid_cols()}));
    QCAL_ASSIGN_OR_RETURN(TensorView zp2d, qparams.zero_point.view().Reshape(
                                               {grid.grid_rows(),
                                                grid.grid_cols()}));
    for (int64_t b = 0; b < bands; b += stride) {
      const int64_t r0 = b * band, r1 = std::min(rows, r0 + band);
      QCAL_ASSIGN_OR_RETURN(TensorView xb, x2d.Narrow(0, r0, r1 - r0));
      TileGrid band_grid = grid;
      band_grid.rows = r1 - r0;
      TensorView sb = scale2d, zb = zp2d;
      if (single_unit) {
        band_grid.tile_rows = r1 - r0;
      } else {
        const int64_t ti = r0 / grid.tile_rows;
        QCAL_ASSIGN_OR_RETURN(sb, scale2d.Narrow(0, ti, 1));
        QCAL_ASSIGN_OR_RETURN(zb, zp2d.Narrow(0, ti, 1));
      }
      row_stats.assign(r1 - r0, QuantErrorRowStats{});
      QCAL_RETURN_IF_ERROR(SimdQuantErrorStats(xb, band_grid, spec, sb, zb,
                                               global_scale, exec,
                                               absl::MakeSpan(row_stats)));
      add_rows();
      stats.rows_used += r1 - r0;
    }
  }
  if (stats.noise_sum == 0.0) {
    stats.sqnr_db = std::numeric_limits<double>::infinity();
  } else if (stats.signal_sum == 0.0) {
    stats.sqnr_db = -std::numeric_limits<double>::infinity();
  } else {
    stats.sqnr_db = 10.0 * std::log10(stats.signal_sum / stats.noise_sum);
  }
  return stats;
}

namespace {


// One target tensor, with its summary once calibrated.
struct Target {
  const SafetensorsEntry* entry;
  TensorStats stats;
};

// Column widths of the summary table.
struct Columns {
  size_t name = 6;
  size_t shape = 5;
};

// The clipped fraction as a percentage; "<0.001%" for a non-zero fraction
// that would print as zero.
std::string FormatClipped(double fraction) {
  if (fraction > 0.0 && fraction < 1e-5) return "<0.001%";
  return absl::StrFormat("%.3f%%", 100.0 * fraction);
}

std::string FormatSqnr(double db) {
  if (std::isinf(db)) return db > 0 ? "inf" : "-inf";
  return absl::StrFormat("%.2f", db);
}

void PrintRow(std::ostream& out, const Columns& cols, const std::string& name,
              const std::string& shape, const std::string& dtype,
              const std::string& scales, const std::string& sqnr,
              const std::string& clipped) {
  out << absl::StrFormat("%-*s  %-*s  %-5s  %-23s  %8s  %8s\n", cols.name,
                         name, cols.shape, shape, dtype, scales, sqnr,
                         clipped);
}

// Calibrates one tensor: observes it with a fresh observer, adds its qparams
// to `writer` and fills in its statistics.
absl::Status CalibrateTensor(const SafetensorsFile& file,
                             const SafetensorsEntry& entry,
                             const QuantizationArgs& args, Device device,
                             const CalibrateOptions& options,
                             SafetensorsWriter& writer, TensorStats* stats) {
  TensorView host = file.View(entry);
  Tensor aligned;
  if (!IsAlignedFor(host)) {
    QCAL_ASSIGN_OR_RETURN(aligned, Tensor::CopyOf(host));
    host = aligned.view();
  }
  DeviceCopy device_copy;
  QCAL_ASSIGN_OR_RETURN(TensorView observed,
                        ToDevice(host, device, &device_copy));
  QCAL_ASSIGN_OR_RETURN(std::unique_ptr<Observer> observer,
                        CreateObserver("", args));
  ObserveOptions observe;
  observe.nonfinite = options.allow_nonfinite ? NonFinitePolicy::kSkip
                                              : NonFinitePolicy::kError;
  observe.exec.threads = options.threads;
  observe.tensor_name = entry.name;
  observer->set_options(observe);

  std::optional<float> global_scale;
  if (args.strategy_or_tensor() == Strategy::kTensorGroup) {
    // SPEC §11: the global scale first, then a reset, then the qparams with
    // it (as llmcompressor calibrates NVFP4 weights).
    QCAL_ASSIGN_OR_RETURN(global_scale, observer->GetGParam(observed));
    observer->Reset();
  }
  QCAL_ASSIGN_OR_RETURN(const QParams* qparams,
                        observer->GetQParams(observed, nullptr, global_scale));
  if (qparams == nullptr) {
    return absl::InternalError("the observer returned no qparams");
  }
  QCAL_ASSIGN_OR_RETURN(
      auto stored, StoredQParams(entry.name, *qparams, global_scale, args));
  for (auto& [name, tensor] : stored) {
    QCAL_RETURN_IF_ERROR(writer.Add(name, std::move(tensor)));
  }
  QCAL_ASSIGN_OR_RETURN(
      *stats, ComputeTensorStats(host, *qparams, global_scale, args,
                                 options.threads,
                                 options.full_summary ? 0
                                                      : kSummarySampleElements));
  return absl::OkStatus();
}

}  // namespace

ToolResult RunCalibrate(const CalibrateOptions& options, std::ostream& out,
                        std::ostream& err) {
  const auto start = std::chrono::steady_clock::now();
  // ---- Usage checks: everything the flags alone decide.
  const bool use_sample = options.input.empty();
  absl::StatusOr<ResolvedArgs> resolved = ResolveArgs(
      options.args, use_sample ? kCalibrateDefaultScheme : "");
  if (!resolved.ok()) return ToolResult::Usage(resolved.status());
  const QuantizationArgs& args = resolved->args;
  absl::StatusOr<NameFilter> filter =
      NameFilter::Create(options.targets, options.ignore);
  if (!filter.ok()) return ToolResult::Usage(filter.status());
  absl::StatusOr<Device> device = ResolveBackend(options.backend);
  if (!device.ok()) return ToolResult::Usage(device.status());
  if (absl::Status s = CheckThreads(options.threads); !s.ok()) {
    return ToolResult::Usage(s);
  }
  if (absl::Status s = ApplyMemoryBudget(options.memory_budget_mb); !s.ok()) {
    return ToolResult::Usage(s);
  }
  if (options.output.empty()) {
    return ToolResult::Usage(
        absl::InvalidArgumentError("--output: the output path is empty"));
  }
  const std::string output = ResolveUserPath(options.output, options.base_dir);

  // ---- The input.
  std::string input;
  if (use_sample) {
    if (options.sample_path.empty()) {
      return ToolResult::Runtime(absl::NotFoundError(absl::StrCat(
          "no --input given and the bundled sample checkpoint is missing: ",
          options.sample_error.message())));
    }
    input = options.sample_path;
  } else {
    input = ResolveUserPath(options.input, options.base_dir);
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened =
      SafetensorsFile::Open(input);
  if (!opened.ok()) return ToolResult::Runtime(opened.status());
  const SafetensorsFile& file = **opened;

  // ---- Targets: 2-D float tensors whose names the filter selects.
  std::vector<Target> targets;
  std::vector<std::string> skipped;
  int64_t total_bytes = 0;
  for (const SafetensorsEntry& entry : file.entries()) {
    if (!filter->Selects(entry.name)) continue;
    if (!IsObservableDType(entry.dtype) || entry.shape.size() != 2) {
      skipped.push_back(absl::StrCat(entry.name, " (", DTypeName(entry.dtype),
                                     " ", ShapeToString(entry.shape), ")"));
      continue;
    }
    if (entry.shape[0] == 0 || entry.shape[1] == 0) {
      skipped.push_back(
          absl::StrCat(entry.name, " (empty ", ShapeToString(entry.shape),
                       ": nothing to observe)"));
      continue;
    }
    targets.push_back({&entry, {}});
    total_bytes += entry.end - entry.begin;
  }
  if (targets.empty()) {
    return ToolResult::Usage(absl::InvalidArgumentError(absl::StrCat(
        "--targets='", options.targets, "'",
        options.ignore.empty() ? ""
                               : absl::StrCat(" --ignore='", options.ignore,
                                              "'"),
        " select no non-empty 2-D F32/F16/BF16 tensor of ", input)));
  }

  if (use_sample) {
    out << "input     the bundled sample checkpoint (//tools:sample_model)\n";
  } else {
    out << "input     " << input << "\n";
  }
  out << "args      " << resolved->source << ": " << args.ToJson() << "\n";
  out << "observer  " << *args.observer << "  (backend "
      << DeviceName(*device) << ", threads "
      << (options.threads == 0 ? std::string("all")
                               : absl::StrCat(options.threads))
      << ")\n\n";
  Columns cols;
  for (const Target& t : targets) {
    cols.name = std::max(cols.name, t.entry->name.size());
    cols.shape = std::max(cols.shape, ShapeToString(t.entry->shape).size());
  }
  PrintRow(out, cols, "tensor", "shape", "dtype", "scale min..max", "SQNR dB",
           "clipped");
  out.flush();

  // ---- One tensor at a time.
  SafetensorsWriter writer(output);
  for (const auto& [key, value] : QParamsMetadata(args, "calibrate")) {
    writer.SetMetadata(key, value);
  }
  ProgressBar progress(err, options.progress, total_bytes);
  int64_t done_bytes = 0;
  bool any_sampled = false;
  for (Target& target : targets) {
    const SafetensorsEntry& entry = *target.entry;
    progress.Update(done_bytes, entry.name);
    absl::Status status = CalibrateTensor(file, entry, args, *device, options,
                                          writer, &target.stats);
    // The tensor's pages are not needed again. (The heap is not trimmed:
    // the next tensor reuses the freed blocks, which keeps the resident set
    // at the largest working set seen without faulting fresh pages in.)
    (void)file.ReleasePages(entry.name);
    if (!status.ok()) {
      progress.Clear();
      return ToolResult::Runtime(WithNonFiniteHint(
          WithTensorContext(status, input, entry.name)));
    }
    done_bytes += entry.end - entry.begin;
    progress.Clear();
    const TensorStats& s = target.stats;
    // "~": estimated from a sample of rows (see kSummarySampleElements).
    const std::string mark = s.sampled() ? "~" : "";
    any_sampled = any_sampled || s.sampled();
    PrintRow(out, cols, entry.name, ShapeToString(entry.shape),
             std::string(DTypeName(entry.dtype)),
             absl::StrFormat("%.4g..%.4g", s.scale_min, s.scale_max),
             mark + FormatSqnr(s.sqnr_db),
             mark + FormatClipped(s.clipped_fraction()));
    out.flush();
  }
  progress.Clear();

  // ---- The output, atomically.
  if (absl::Status s = writer.Finish(); !s.ok()) {
    return ToolResult::Runtime(s);
  }
  const double seconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - start)
                             .count();
  out << "\n";
  if (any_sampled) {
    out << "~         SQNR and clipped estimated from evenly spaced rows (about "
        << kSummarySampleElements
        << " elements per tensor); --full_summary evaluates every element\n";
  }
  if (!skipped.empty()) {
    out << "skipped   " << skipped.size()
        << " selected tensors that are not non-empty 2-D F32/F16/BF16:\n";
    for (const std::string& name : skipped) out << "          " << name << "\n";
  }
  out << "wrote     " << output << "  (qparams of " << targets.size()
      << (targets.size() == 1 ? " tensor)\n" : " tensors)\n");
  out << absl::StrFormat("time      %.2f s, peak RSS %s\n", seconds,
                         FormatBytes(PeakRssBytes()));
  return ToolResult::Ok();
}

}  // namespace qcal
