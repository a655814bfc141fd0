// The C++ example of README.md ("Using the library"), kept compiling and
// checked: if this file changes, update the README (and vice versa).
#include <cstdio>
#include <vector>

#include "core/quant_args.h"
#include "core/status_macros.h"
#include "core/tensor.h"
#include "gtest/gtest.h"
#include "observers/observer.h"

namespace {

// README example begins
absl::Status CalibrateOneWeight() {
  // W4A16: int4, symmetric, groups of 128 columns; calibrated by "mse".
  QCAL_ASSIGN_OR_RETURN(qcal::QuantizationArgs args,
                        qcal::QuantizationArgsFromScheme("W4A16"));
  QCAL_ASSIGN_OR_RETURN(std::unique_ptr<qcal::Observer> observer,
                        qcal::CreateObserver("mse", args));

  std::vector<float> weight(256 * 512);
  for (size_t i = 0; i < weight.size(); ++i) weight[i] = 0.01f * (i % 97);
  QCAL_ASSIGN_OR_RETURN(
      qcal::TensorView view,
      qcal::TensorView::Contiguous(weight.data(), qcal::DType::kF32, {256, 512}));

  QCAL_ASSIGN_OR_RETURN(const qcal::QParams* qparams,
                        observer->GetQParams(view));
  // scale: F32 [256, 4]; zero_point: I8 [256, 4]
  std::printf("scale %s, zero point %s\n",
              qparams->scale.view().DebugString().c_str(),
              qparams->zero_point.view().DebugString().c_str());
  return absl::OkStatus();
}
// README example ends

TEST(ReadmeExampleTest, Runs) { EXPECT_TRUE(CalibrateOneWeight().ok()); }

}  // namespace
