#include "core/layout.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace qcal {

absl::StatusOr<TensorView> View2DForStrategy(const TensorView& x,
                                             const QuantizationArgs& args) {
  if (!x.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat("observed tensor ", x.DebugString(),
                     " must be contiguous"));
  }
  const Strategy strategy = args.strategy_or_tensor();
  switch (strategy) {
    case Strategy::kTensor:
      return x.As2D();
    case Strategy::kChannel: {
      if (x.rank() < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "strategy \"channel\" needs a tensor of rank >= 1, got ",
            x.DebugString()));
      }
      const int64_t rows = x.dim(0);
      const int64_t cols = rows == 0 ? 0 : x.numel() / rows;
      if (rows == 0) {
        int64_t rest = 1;
        for (int i = 1; i < x.rank(); ++i) rest *= x.dim(i);
        return x.Reshape({0, rest});
      }
      return x.Reshape({rows, cols});
    }
    case Strategy::kBlock:
      if (x.rank() != 2) {
        return absl::InvalidArgumentError(absl::StrCat(
            "strategy \"block\" needs a 2-D tensor, got ", x.DebugString()));
      }
      return x;
    case Strategy::kGroup:
    case Strategy::kTensorGroup:
    case Strategy::kToken:
      if (x.rank() < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("strategy \"", StrategyName(strategy),
                         "\" needs a tensor of rank >= 1, got ",
                         x.DebugString()));
      }
      return x.As2D();
  }
  return absl::InternalError("unknown strategy");
}

absl::StatusOr<TileGrid> TileGridForStrategy(const TensorView& x2d,
                                             const QuantizationArgs& args) {
  if (x2d.rank() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a 2-D view, got ", x2d.DebugString()));
  }
  TileGrid grid;
  grid.rows = x2d.dim(0);
  grid.cols = x2d.dim(1);
  switch (args.strategy_or_tensor()) {
    case Strategy::kTensor:
      grid.tile_rows = grid.rows > 0 ? grid.rows : 1;
      grid.tile_cols = grid.cols > 0 ? grid.cols : 1;
      break;
    case Strategy::kChannel:
    case Strategy::kToken:
      grid.tile_rows = 1;
      grid.tile_cols = grid.cols > 0 ? grid.cols : 1;
      break;
    case Strategy::kGroup:
    case Strategy::kTensorGroup:
      if (!args.group_size.has_value() || *args.group_size <= 0) {
        return absl::InvalidArgumentError("group strategies need group_size");
      }
      grid.tile_rows = 1;
      grid.tile_cols = *args.group_size;
      break;
    case Strategy::kBlock:
      if (!args.block_structure.has_value()) {
        return absl::InvalidArgumentError("block strategy needs block_structure");
      }
      grid.tile_rows = (*args.block_structure)[0];
      grid.tile_cols = (*args.block_structure)[1];
      break;
  }
  return grid;
}

Shape QParamShape(Strategy strategy, const TileGrid& grid) {
  switch (strategy) {
    case Strategy::kTensor:
      return {1};
    case Strategy::kChannel:
    case Strategy::kToken:
      return {grid.rows, 1};
    default:
      return {grid.grid_rows(), grid.grid_cols()};
  }
}

}  // namespace qcal
