#include "core/cpu/reference_kernels.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/element_access.h"
#include "core/parallel.h"
#include "core/qparams.h"

namespace qcal {
namespace {

absl::Status CheckView(const TensorView& x, const TileGrid& grid,
                       FloatFormat format) {
  if (x.device() != Device::kCpu || x.rank() != 2 || !x.is_contiguous() ||
      x.dim(0) != grid.rows || x.dim(1) != grid.cols ||
      x.dtype() != DTypeOf(format)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reduction input ", x.DebugString(),
        " is not a contiguous 2-D CPU tensor matching its grid [", grid.rows,
        ", ", grid.cols, "] of ", DTypeName(DTypeOf(format))));
  }
  if (grid.tile_rows <= 0 || grid.tile_cols <= 0) {
    return absl::InvalidArgumentError("tile sizes must be positive");
  }
  return absl::OkStatus();
}

// ----------------------------------------------------------------- MinMax

// Min/max of row `r` over columns [c0, c1); updates *mn, *mx; records the
// first non-finite flat index in *bad (kError) or skips it (kSkip).
template <FloatFormat F>
void RowMinMax(const void* data, int64_t cols, int64_t r, int64_t c0,
               int64_t c1, bool skip, float* mn, float* mx, bool* any,
               int64_t* bad) {
  const int64_t base = r * cols;
  for (int64_t c = c0; c < c1; ++c) {
    const float v = LoadAs<F>(data, base + c);
    if (!IsFiniteF(v)) {
      if (!skip && *bad < 0) *bad = base + c;
      continue;
    }
    if (!*any) {
      *mn = v;
      *mx = v;
      *any = true;
    } else {
      // Strict comparisons: of equal values (+0 and -0) the first one met in
      // flat order stays.
      *mn = v < *mn ? v : *mn;
      *mx = v > *mx ? v : *mx;
    }
  }
}

template <FloatFormat F>
absl::Status MinMaxImpl(const MinMaxRequest& req, const ExecOptions& exec,
                        const MinMaxOutput& out) {
  const TileGrid& g = req.grid;
  const bool skip = req.nonfinite == NonFinitePolicy::kSkip;
  const int64_t gc = g.grid_cols();
  const int64_t gr = g.grid_rows();
  const int threads = ResolveThreads(exec.threads);
  // Per data row partials, merged per tile row in row order: min/max are
  // exact and ties keep the earlier value, so the split never changes
  // results. Partials cover [tile col].
  struct Partial {
    float mn, mx;
    bool any;
  };
  std::atomic<int64_t> first_bad{std::numeric_limits<int64_t>::max()};
  auto process_rows = [&](int64_t row_begin, int64_t row_end,
                          std::vector<Partial>& acc, int64_t* bad) {
    for (int64_t r = row_begin; r < row_end; ++r) {
      for (int64_t tj = 0; tj < gc; ++tj) {
        Partial& p = acc[tj];
        RowMinMax<F>(req.x.data(), g.cols, r, g.col_begin(tj), g.col_end(tj),
                     skip, &p.mn, &p.mx, &p.any, bad);
      }
    }
  };
  auto finish_tile_row = [&](int64_t ti, const std::vector<Partial>& acc) {
    for (int64_t tj = 0; tj < gc; ++tj) {
      const int64_t u = ti * gc + tj;
      out.min[u] = acc[tj].any ? acc[tj].mn : 0.0f;
      out.max[u] = acc[tj].any ? acc[tj].mx : 0.0f;
    }
  };
  auto note_bad = [&](int64_t bad) {
    if (bad < 0) return;
    int64_t cur = first_bad.load();
    while (bad < cur && !first_bad.compare_exchange_weak(cur, bad)) {
    }
  };
  // Parallelise over tile rows when there are many (channel, group, token),
  // over the data rows of each tile row otherwise (tensor, block).
  if (gr >= 2 * threads || g.tile_rows == 1) {
    ParallelFor(gr, threads, 1, [&](int64_t begin, int64_t end) {
      std::vector<Partial> acc(gc);
      int64_t bad = -1;
      for (int64_t ti = begin; ti < end; ++ti) {
        std::fill(acc.begin(), acc.end(), Partial{0, 0, false});
        process_rows(g.row_begin(ti), g.row_end(ti), acc, &bad);
        finish_tile_row(ti, acc);
      }
      note_bad(bad);
    });
  } else {
    for (int64_t ti = 0; ti < gr; ++ti) {
      const int64_t r0 = g.row_begin(ti), r1 = g.row_end(ti);
      const int64_t nrows = r1 - r0;
      const int workers =
          static_cast<int>(std::min<int64_t>(threads, nrows > 0 ? nrows : 1));
      std::vector<std::vector<Partial>> parts(
          workers, std::vector<Partial>(gc, Partial{0, 0, false}));
      std::vector<int64_t> bads(workers, -1);
      const int64_t chunk = (nrows + workers - 1) / workers;
      ParallelFor(workers, workers, 1, [&](int64_t wb, int64_t we) {
        for (int64_t w = wb; w < we; ++w) {
          const int64_t a = r0 + w * chunk;
          const int64_t b = std::min(r1, a + chunk);
          if (a < b) process_rows(a, b, parts[w], &bads[w]);
        }
      });
      std::vector<Partial> acc(gc, Partial{0, 0, false});
      for (int w = 0; w < workers; ++w) {
        note_bad(bads[w]);
        for (int64_t tj = 0; tj < gc; ++tj) {
          const Partial& p = parts[w][tj];
          if (!p.any) continue;
          Partial& q = acc[tj];
          if (!q.any) {
            q = p;
          } else {
            q.mn = p.mn < q.mn ? p.mn : q.mn;
            q.mx = p.mx > q.mx ? p.mx : q.mx;
          }
        }
      }
      finish_tile_row(ti, acc);
    }
  }
  const int64_t bad = first_bad.load();
  if (out.first_nonfinite != nullptr) {
    *out.first_nonfinite =
        bad == std::numeric_limits<int64_t>::max() ? -1 : bad;
  }
  return absl::OkStatus();
}

// -------------------------------------------------------------- MSE errors

template <FloatFormat F>
absl::Status MseErrorsImpl(const MseRequest& req, const ExecOptions& exec,
                           float* errors) {
  const TileGrid& g = req.grid;
  const int64_t gc = g.grid_cols();
  const int64_t ncand = static_cast<int64_t>(req.shrink.size());
  const bool skip = req.nonfinite == NonFinitePolicy::kSkip;
  // Work items: (listed unit, row of that unit). Row sums are kept per item
  // and candidate, then added per unit in row order.
  std::vector<int64_t> item_start(req.units.size() + 1, 0);
  for (size_t i = 0; i < req.units.size(); ++i) {
    const int64_t ti = req.units[i] / gc;
    item_start[i + 1] = item_start[i] + (g.row_end(ti) - g.row_begin(ti));
  }
  const int64_t items = item_start.back();
  std::vector<double> row_sums(static_cast<size_t>(items * ncand), 0.0);
  std::vector<FakeQuantParams> params(req.units.size() * ncand);
  for (size_t i = 0; i < req.units.size(); ++i) {
    for (int64_t c = 0; c < ncand; ++c) {
      params[i * ncand + c] = CandidateParams<F>(
          req.unit_min[i], req.unit_max[i], req.shrink[c], req.spec,
          req.has_global_scale, req.global_scale);
    }
  }
  ParallelFor(items, exec.threads, 16, [&](int64_t begin, int64_t end) {
    // Find the listed unit of item `begin`.
    size_t i = std::upper_bound(item_start.begin(), item_start.end(), begin) -
               item_start.begin() - 1;
    for (int64_t item = begin; item < end; ++item) {
      while (item >= item_start[i + 1]) ++i;
      const int64_t u = req.units[i];
      const int64_t ti = u / gc, tj = u % gc;
      const int64_t r = g.row_begin(ti) + (item - item_start[i]);
      const int64_t c0 = g.col_begin(tj), c1 = g.col_end(tj);
      const void* data = req.x.data();
      const int64_t base = r * g.cols + c0;
      auto load = [data, base](int64_t k) { return LoadAs<F>(data, base + k); };
      for (int64_t c = 0; c < ncand; ++c) {
        row_sums[item * ncand + c] =
            RowErrorSum<F>(load, c1 - c0, params[i * ncand + c], req.spec,
                           req.norm_exponent, skip);
      }
    }
  });
  for (size_t i = 0; i < req.units.size(); ++i) {
    for (int64_t c = 0; c < ncand; ++c) {
      double sum = 0.0;
      for (int64_t item = item_start[i]; item < item_start[i + 1]; ++item) {
        sum += row_sums[item * ncand + c];
      }
      errors[i * ncand + c] = FinishErrorSum<F>(sum);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateMinMaxRequest(const MinMaxRequest& req) {
  return CheckView(req.x, req.grid, req.format);
}

absl::Status ValidateMseRequest(const MseRequest& req) {
  absl::Status s = CheckView(req.x, req.grid, req.format);
  if (!s.ok()) return s;
  if (req.unit_min.size() != req.units.size() ||
      req.unit_max.size() != req.units.size()) {
    return absl::InvalidArgumentError("unit_min/unit_max must match units");
  }
  for (int64_t u : req.units) {
    if (u < 0 || u >= req.grid.num_units()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unit ", u, " outside the grid"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReferenceMinMax(const MinMaxRequest& req, const ExecOptions& exec,
                             const MinMaxOutput& out) {
  absl::Status s = ValidateMinMaxRequest(req);
  if (!s.ok()) return s;
  return DispatchFormat(req.format, [&](auto f) {
    return MinMaxImpl<decltype(f)::value>(req, exec, out);
  });
}

absl::Status ReferenceMseErrors(const MseRequest& req, const ExecOptions& exec,
                                float* errors) {
  absl::Status s = ValidateMseRequest(req);
  if (!s.ok()) return s;
  return DispatchFormat(req.format, [&](auto f) {
    return MseErrorsImpl<decltype(f)::value>(req, exec, errors);
  });
}

}  // namespace qcal
