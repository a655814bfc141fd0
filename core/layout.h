// How a strategy cuts an observed tensor into quantization units (SPEC §1, §7).
//
// Every strategy is a TileGrid over a 2-D view of the tensor: units are tiles
// of tile_rows x tile_cols, edge tiles possibly partial, numbered row-major.
//   tensor        one tile covering the whole [rows, cols] view
//   channel       [1, cols] tiles of [dim0, prod(other dims)]
//   token         [1, hidden] tiles of [prod(leading dims), hidden]
//   group(_tensor)[1, group_size] tiles of [prod(leading dims), cols]
//   block         [bh, bw] tiles of a 2-D tensor
// The qparams of a grid have shape [grid_rows, grid_cols], except that tensor
// gives [1] and channel/token give [rows, 1] (the same numbers).
#ifndef QCAL_CORE_LAYOUT_H_
#define QCAL_CORE_LAYOUT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/quant_args.h"
#include "core/tensor.h"

namespace qcal {

// TileGrid describes the units of one strategy over a 2-D view.
struct TileGrid {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t tile_rows = 1;
  int64_t tile_cols = 1;

  int64_t grid_rows() const {
    return tile_rows > 0 ? (rows + tile_rows - 1) / tile_rows : 0;
  }
  int64_t grid_cols() const {
    return tile_cols > 0 ? (cols + tile_cols - 1) / tile_cols : 0;
  }
  int64_t num_units() const { return grid_rows() * grid_cols(); }
  // Row and column ranges of unit (i, j): [r0, r1) x [c0, c1).
  int64_t row_begin(int64_t i) const { return i * tile_rows; }
  int64_t row_end(int64_t i) const {
    const int64_t e = (i + 1) * tile_rows;
    return e < rows ? e : rows;
  }
  int64_t col_begin(int64_t j) const { return j * tile_cols; }
  int64_t col_end(int64_t j) const {
    const int64_t e = (j + 1) * tile_cols;
    return e < cols ? e : cols;
  }
};

// View2DForStrategy returns the 2-D view of a contiguous tensor that the
// strategy of `args` works on (see the file comment). Block needs a 2-D tensor;
// channel needs rank >= 1; group, tensor_group and token need rank >= 1 (a
// 1-d tensor is one row).
absl::StatusOr<TensorView> View2DForStrategy(const TensorView& x,
                                             const QuantizationArgs& args);

// TileGridForStrategy returns the grid of `args`' strategy over a 2-D view.
absl::StatusOr<TileGrid> TileGridForStrategy(const TensorView& x2d,
                                             const QuantizationArgs& args);

// QParamShape is the shape of the scale / zero point for a strategy's grid.
Shape QParamShape(Strategy strategy, const TileGrid& grid);

}  // namespace qcal

#endif  // QCAL_CORE_LAYOUT_H_
