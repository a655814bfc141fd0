// make_sample: writes the deterministic sample files the tools run on.
//
//   --kind=model        a small bf16 model-shaped checkpoint (attention
//                       q/k/v/o with a bias, dense MLP gate/up/down, an MoE
//                       layer with a router and four experts, norms, an
//                       embedding and an LM head; about 2.7 MB), the bundled
//                       sample of `calibrate`.
//   --kind=activations  three calibration batches for `token_count`
//                       (sample_batch{0,1,2}.safetensors in the --output
//                       directory): 2-D and 3-D activations, an MoE expert
//                       that is routed no token in any batch, one that is
//                       empty in one batch and one present in one batch only.
//   --kind=large        a Llama-shaped bf16 checkpoint of about --size_mib
//                       MiB (hidden size 4096) for memory and speed checks.
//
// The values come from this file's own generator (SplitMix64 bits, an
// Irwin-Hall approximation of a normal distribution in float32 arithmetic,
// exact bf16 rounding), so the bytes are the same on every platform and
// compiler; the build runs it from a genrule.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/float_convert.h"
#include "core/safetensors.h"
#include "core/status_macros.h"
#include "core/tensor.h"
#include "gflags/gflags.h"

DEFINE_string(kind, "model", "what to write: model, activations or large");
DEFINE_string(output, "",
              "output file (model, large) or directory (activations)");
DEFINE_int64(size_mib, 1024, "approximate size of --kind=large, in MiB");

namespace qcal {
namespace {

// Rng is SplitMix64 (Steele, Lea and Flood): 64 random bits per step from a
// 64-bit counter, identical on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  // Uniform returns a float in [0, 1) with 24 random bits (exact).
  float Uniform() {
    return static_cast<float>(Next() >> 40) * (1.0f / 16777216.0f);
  }

  // Normal approximates a standard normal value: the sum of four uniforms
  // (Irwin-Hall, variance 1/3) centred and scaled by sqrt(3). Plain float32
  // arithmetic, no libm, so the result is the same everywhere.
  float Normal() {
    const float sum = Uniform() + Uniform() + Uniform() + Uniform();
    return (sum - 2.0f) * 1.7320508f;
  }

 private:
  uint64_t state_;
};

// Seed derives a per-tensor seed from its name (FNV-1a), so that adding a
// tensor does not change the others.
uint64_t Seed(const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

// Linear-layer weight: rows of different spread (std * [0.5, 1.5)) and rare
// outliers (1 in 512 elements, 8x), as trained weights have.
absl::StatusOr<Tensor> Weight(const std::string& name, int64_t rows,
                              int64_t cols, float std) {
  QCAL_ASSIGN_OR_RETURN(Tensor t, Tensor::Zeros(DType::kBF16, {rows, cols}));
  uint16_t* data = t.mutable_data_as<uint16_t>();
  Rng rng(Seed(name));
  for (int64_t r = 0; r < rows; ++r) {
    const float row_std = std * (0.5f + rng.Uniform());
    for (int64_t c = 0; c < cols; ++c) {
      float v = rng.Normal() * row_std;
      if ((rng.Next() & 511) == 0) v *= 8.0f;
      data[r * cols + c] = FloatToBf16Bits(v);
    }
  }
  return t;
}

// 1-D parameter around `center` (norm weights near 1, biases near 0).
absl::StatusOr<Tensor> Vector(const std::string& name, int64_t n,
                              float center, float std) {
  QCAL_ASSIGN_OR_RETURN(Tensor t, Tensor::Zeros(DType::kBF16, {n}));
  uint16_t* data = t.mutable_data_as<uint16_t>();
  Rng rng(Seed(name));
  for (int64_t i = 0; i < n; ++i) {
    data[i] = FloatToBf16Bits(center + rng.Normal() * std);
  }
  return t;
}

// Activation [shape..., hidden]: unit spread with two outlier channels (20x),
// as LLM hidden states have.
absl::StatusOr<Tensor> Activation(const std::string& name, Shape shape) {
  QCAL_ASSIGN_OR_RETURN(Tensor t, Tensor::Zeros(DType::kBF16, shape));
  uint16_t* data = t.mutable_data_as<uint16_t>();
  const int64_t hidden = shape.back();
  Rng rng(Seed(name));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const int64_t c = i % hidden;
    const float gain = (c == 3 || c == hidden / 2) ? 20.0f : 1.0f;
    data[i] = FloatToBf16Bits(rng.Normal() * gain);
  }
  return t;
}

using Tensors = std::vector<std::pair<std::string, Tensor>>;

absl::Status AddWeight(Tensors& out, const std::string& name, int64_t rows,
                       int64_t cols, float std = 0.02f) {
  QCAL_ASSIGN_OR_RETURN(Tensor t, Weight(name, rows, cols, std));
  out.emplace_back(name, std::move(t));
  return absl::OkStatus();
}

absl::Status AddVector(Tensors& out, const std::string& name, int64_t n,
                       float center, float std) {
  QCAL_ASSIGN_OR_RETURN(Tensor t, Vector(name, n, center, std));
  out.emplace_back(name, std::move(t));
  return absl::OkStatus();
}

absl::Status AddAttention(Tensors& out, const std::string& p, int64_t hidden,
                          int64_t kv) {
  QCAL_RETURN_IF_ERROR(AddVector(out, p + "input_layernorm.weight", hidden,
                                 1.0f, 0.05f));
  QCAL_RETURN_IF_ERROR(
      AddWeight(out, p + "self_attn.q_proj.weight", hidden, hidden));
  QCAL_RETURN_IF_ERROR(
      AddVector(out, p + "self_attn.q_proj.bias", hidden, 0.0f, 0.01f));
  QCAL_RETURN_IF_ERROR(AddWeight(out, p + "self_attn.k_proj.weight", kv,
                                 hidden));
  QCAL_RETURN_IF_ERROR(AddWeight(out, p + "self_attn.v_proj.weight", kv,
                                 hidden));
  QCAL_RETURN_IF_ERROR(
      AddWeight(out, p + "self_attn.o_proj.weight", hidden, hidden));
  return AddVector(out, p + "post_attention_layernorm.weight", hidden, 1.0f,
                   0.05f);
}

absl::Status WriteModel(const std::string& path) {
  constexpr int64_t kHidden = 256, kKv = 64, kInter = 512, kVocab = 512;
  constexpr int64_t kExperts = 4, kExpertInter = 128;
  Tensors t;
  QCAL_RETURN_IF_ERROR(
      AddWeight(t, "model.embed_tokens.weight", kVocab, kHidden, 1.0f));
  QCAL_RETURN_IF_ERROR(AddAttention(t, "model.layers.0.", kHidden, kKv));
  QCAL_RETURN_IF_ERROR(
      AddWeight(t, "model.layers.0.mlp.gate_proj.weight", kInter, kHidden));
  QCAL_RETURN_IF_ERROR(
      AddWeight(t, "model.layers.0.mlp.up_proj.weight", kInter, kHidden));
  QCAL_RETURN_IF_ERROR(
      AddWeight(t, "model.layers.0.mlp.down_proj.weight", kHidden, kInter));
  QCAL_RETURN_IF_ERROR(AddAttention(t, "model.layers.1.", kHidden, kKv));
  QCAL_RETURN_IF_ERROR(
      AddWeight(t, "model.layers.1.mlp.gate.weight", kExperts, kHidden));
  for (int e = 0; e < kExperts; ++e) {
    const std::string p = absl::StrCat("model.layers.1.mlp.experts.", e, ".");
    QCAL_RETURN_IF_ERROR(
        AddWeight(t, p + "gate_proj.weight", kExpertInter, kHidden));
    QCAL_RETURN_IF_ERROR(
        AddWeight(t, p + "up_proj.weight", kExpertInter, kHidden));
    QCAL_RETURN_IF_ERROR(
        AddWeight(t, p + "down_proj.weight", kHidden, kExpertInter));
  }
  QCAL_RETURN_IF_ERROR(AddVector(t, "model.norm.weight", kHidden, 1.0f, 0.05f));
  QCAL_RETURN_IF_ERROR(AddWeight(t, "lm_head.weight", kVocab, kHidden));
  return WriteSafetensors(path, std::move(t),
                          {{"format", "pt"}, {"qcal_sample", "model"}});
}

absl::Status WriteActivations(const std::string& dir) {
  constexpr int64_t kHidden = 256, kInter = 512;
  const int64_t tokens[3] = {12, 7, 16};
  const int64_t expert0[3] = {7, 4, 9};
  const int64_t expert1[3] = {5, 0, 7};
  for (int b = 0; b < 3; ++b) {
    const std::string tag = absl::StrCat("batch", b, ".");
    Tensors t;
    auto add = [&](const std::string& module, Shape shape) -> absl::Status {
      const std::string name = module + ".input";
      QCAL_ASSIGN_OR_RETURN(Tensor a, Activation(tag + name, shape));
      t.emplace_back(name, std::move(a));
      return absl::OkStatus();
    };
    const int64_t n = tokens[b];
    QCAL_RETURN_IF_ERROR(add("model.layers.0.self_attn.q_proj", {n, kHidden}));
    // Recorded with its batch dimension: observed, but no token is counted
    // (SPEC §7 counts 2-D activations only).
    QCAL_RETURN_IF_ERROR(
        add("model.layers.0.self_attn.o_proj", {1, n, kHidden}));
    QCAL_RETURN_IF_ERROR(add("model.layers.0.mlp.down_proj", {n, kInter}));
    QCAL_RETURN_IF_ERROR(
        add("model.layers.1.mlp.experts.0", {expert0[b], kHidden}));
    QCAL_RETURN_IF_ERROR(
        add("model.layers.1.mlp.experts.1", {expert1[b], kHidden}));
    // The router never picks expert 2: an empty activation in every batch.
    QCAL_RETURN_IF_ERROR(add("model.layers.1.mlp.experts.2", {0, kHidden}));
    // Expert 3 appears in batch 1 only.
    if (b == 1) {
      QCAL_RETURN_IF_ERROR(add("model.layers.1.mlp.experts.3", {3, kHidden}));
    }
    QCAL_RETURN_IF_ERROR(WriteSafetensors(
        absl::StrCat(dir, "/sample_batch", b, ".safetensors"), std::move(t),
        {{"qcal_sample", absl::StrCat("activations, batch ", b)}}));
  }
  return absl::OkStatus();
}

absl::Status WriteLarge(const std::string& path, int64_t size_mib) {
  constexpr int64_t kHidden = 4096, kKv = 1024, kInter = 14336;
  const int64_t budget = size_mib * 1024 * 1024;
  Tensors t;
  int64_t bytes = 0;
  for (int layer = 0; bytes < budget; ++layer) {
    const std::string p = absl::StrCat("model.layers.", layer, ".");
    const std::pair<std::string, std::pair<int64_t, int64_t>> shapes[] = {
        {"self_attn.q_proj.weight", {kHidden, kHidden}},
        {"self_attn.k_proj.weight", {kKv, kHidden}},
        {"self_attn.v_proj.weight", {kKv, kHidden}},
        {"self_attn.o_proj.weight", {kHidden, kHidden}},
        {"mlp.gate_proj.weight", {kInter, kHidden}},
        {"mlp.up_proj.weight", {kInter, kHidden}},
        {"mlp.down_proj.weight", {kHidden, kInter}},
    };
    for (const auto& [name, shape] : shapes) {
      const int64_t size = shape.first * shape.second * 2;
      if (bytes + size > budget && bytes > 0) {
        bytes = budget;
        break;
      }
      QCAL_RETURN_IF_ERROR(AddWeight(t, p + name, shape.first, shape.second));
      bytes += size;
    }
  }
  return WriteSafetensors(path, std::move(t),
                          {{"format", "pt"}, {"qcal_sample", "large"}});
}

}  // namespace
}  // namespace qcal

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "make_sample --kind=model|activations|large --output=PATH");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_output.empty() || argc > 1) {
    std::fprintf(stderr, "make_sample: give --output (and no positional "
                         "arguments); see --help\n");
    return 2;
  }
  // Under `bazel run`, a relative --output is relative to the invoking
  // directory.
  const char* base = std::getenv("BUILD_WORKING_DIRECTORY");
  if (base != nullptr && !FLAGS_output.empty() && FLAGS_output[0] != '/') {
    FLAGS_output = std::string(base) + "/" + FLAGS_output;
  }
  absl::Status status;
  if (FLAGS_kind == "model") {
    status = qcal::WriteModel(FLAGS_output);
  } else if (FLAGS_kind == "activations") {
    status = qcal::WriteActivations(FLAGS_output);
  } else if (FLAGS_kind == "large") {
    if (FLAGS_size_mib <= 0) {
      std::fprintf(stderr, "make_sample: --size_mib must be positive\n");
      return 2;
    }
    status = qcal::WriteLarge(FLAGS_output, FLAGS_size_mib);
  } else {
    std::fprintf(stderr,
                 "make_sample: unknown --kind=%s (model, activations or "
                 "large)\n",
                 FLAGS_kind.c_str());
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "make_sample: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
