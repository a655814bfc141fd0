// How the MSE error term's libm-free PowPositive (core/quant_math.h) compares
// with a correctly rounded pow (std::pow in long double, rounded once), and
// what it costs. Prints markdown for docs/PERFORMANCE.md:
//   1. the fraction of error-term values that differ, over the |e| values an
//      MSE search actually produces on random weights (f32, and f16/bf16
//      through PowNorm's rounding to the format);
//   2. the fraction of units whose chosen candidate differs when the whole
//      search (step-by-step rule, canonical summation order) runs with each
//      pow, for int8 channel, int4 group 128 and NVFP4 on random weights;
//   3. nanoseconds per element of PowPositive (scalar and as the SIMD kernel
//      evaluates it), std::pow(double) and powl.
// Usage: ./bazelw run -c opt //tools/bench:pow_accuracy -- [--rows=512]
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "core/cpu/simd_kernels.h"
#include "core/float_convert.h"
#include "core/parallel.h"
#include "core/quant_math.h"

namespace qcal {
namespace {

// The correctly rounded float32 a^e.
float CorrectPow(float a, float e) {
  if (a == 0.0f) return 0.0f;
  return static_cast<float>(
      std::pow(static_cast<long double>(a), static_cast<long double>(e)));
}

// PowNorm<F> with a given float32 pow.
template <FloatFormat F>
float PowNormWith(float a, float e, bool correct) {
  return Round<F>(correct ? CorrectPow(a, e) : PowPositive(a, e));
}

struct Weights {
  int64_t rows, cols;
  std::vector<float> values;  // already values of the format
};

Weights RandomWeights(FloatFormat f, int64_t rows, int64_t cols,
                      uint32_t seed) {
  Weights w{rows, cols, std::vector<float>(rows * cols)};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (int64_t i = 0; i < rows * cols; ++i) {
    float v = normal(rng);
    if (i % 9973 == 0) v *= 8.0f;
    w.values[i] = RoundTo(f, v);
  }
  return w;
}

struct Scheme {
  const char* name;
  QuantSpec spec;
  int64_t group;  // columns per unit (0: whole row)
  bool global;
};

// Per unit and step, the error of every candidate with both pows; then the
// step-by-step rule per call; returns {units, units whose chosen step
// differs, terms compared, terms differing}.
template <FloatFormat F>
std::vector<int64_t> CompareSearch(const Weights& w, const Scheme& s) {
  const int64_t gs = s.group == 0 ? w.cols : s.group;
  const int64_t groups = (w.cols + gs - 1) / gs;
  const int steps = 20;  // int(maxshrink * grid) with the defaults
  const float e = NormExponent<F>(2.4);
  float g = 1.0f;
  if (s.global) {
    float mn = 0, mx = 0;
    for (float v : w.values) {
      mn = std::min(mn, v);
      mx = std::max(mx, v);
    }
    g = GlobalScale(mn, mx);
  }
  // err[(unit) * steps + i] for unit = row * groups + group.
  const int64_t units = w.rows * groups;
  std::vector<float> err_ours(units * steps), err_ref(units * steps);
  std::vector<int64_t> terms(units, 0), differing(units, 0);
  ParallelFor(units, 0, 16, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t r = u / groups, j = u % groups;
      const float* x = w.values.data() + r * w.cols + j * gs;
      const int64_t n = std::min(gs, w.cols - j * gs);
      float a = x[0], b = x[0];
      for (int64_t k = 0; k < n; ++k) {
        a = std::min(a, x[k]);
        b = std::max(b, x[k]);
      }
      for (int i = 0; i < steps; ++i) {
        const FakeQuantParams p =
            CandidateParams<F>(a, b, ShrinkFactor(i, 100.0), s.spec, s.global,
                               g);
        double lanes_ours[kErrorSumLanes] = {}, lanes_ref[kErrorSumLanes] = {};
        for (int64_t k = 0; k < n; ++k) {
          const float fq = FakeQuantize<F>(x[k], p, s.spec);
          const float m = std::fabs(Round<F>(fq - x[k]));
          const float t_ours = PowNormWith<F>(m, e, false);
          const float t_ref = PowNormWith<F>(m, e, true);
          ++terms[u];
          if (t_ours != t_ref) ++differing[u];
          lanes_ours[k % kErrorSumLanes] += t_ours;
          lanes_ref[k % kErrorSumLanes] += t_ref;
        }
        double so = 0, sr = 0;
        for (int l = 0; l < kErrorSumLanes; ++l) {
          so += lanes_ours[l];
          sr += lanes_ref[l];
        }
        err_ours[u * steps + i] = FinishErrorSum<F>(so);
        err_ref[u * steps + i] = FinishErrorSum<F>(sr);
      }
    }
  });
  // The step-by-step rule, one call per group column (one call for
  // channel): returns each unit's chosen step (-1: none).
  auto choose = [&](const std::vector<float>& err) {
    std::vector<int> chosen(units, -1);
    for (int64_t j = 0; j < groups; ++j) {
      std::vector<float> best(w.rows, 3.4028234663852886e+38f);
      if (F == FloatFormat::kBF16) best.assign(w.rows, Bf16BitsToFloat(0x7F7F));
      if (F == FloatFormat::kF16) best.assign(w.rows, 65504.0f);
      int no_improve = 0;
      for (int i = 0; i < steps; ++i) {
        bool improved = false;
        for (int64_t r = 0; r < w.rows; ++r) {
          const int64_t u = r * groups + j;
          if (err[u * steps + i] < best[r]) {
            best[r] = err[u * steps + i];
            chosen[u] = i;
            improved = true;
          }
        }
        if (improved) {
          no_improve = 0;
        } else if (++no_improve >= 5) {
          break;
        }
      }
    }
    return chosen;
  };
  const std::vector<int> a = choose(err_ours), b = choose(err_ref);
  int64_t diff_units = 0, all_terms = 0, diff_terms = 0;
  for (int64_t u = 0; u < units; ++u) {
    diff_units += a[u] != b[u];
    all_terms += terms[u];
    diff_terms += differing[u];
  }
  return {units, diff_units, all_terms, diff_terms};
}

double NsPerCall(const std::function<float(float)>& f,
                 const std::vector<float>& in) {
  float sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int rep = 0; rep < 3; ++rep) {
    for (float a : in) sink += f(a);
  }
  const auto t1 = std::chrono::steady_clock::now();
  volatile float keep = sink;
  (void)keep;
  return std::chrono::duration<double, std::nano>(t1 - t0).count() /
         (3.0 * in.size());
}

int Main(int argc, char** argv) {
  int64_t rows = 512;
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (absl::StartsWith(a, "--rows=") &&
        absl::SimpleAtoi(a.substr(7), &rows) && rows > 0) {
      continue;
    }
    std::fprintf(stderr, "pow_accuracy: unknown or bad flag %s\n", argv[i]);
    return 2;
  }
  const Scheme schemes[] = {
      {"int8 channel", QuantSpecFor(false, 8, true), 0, false},
      {"int4 group 128", QuantSpecFor(false, 4, true), 128, false},
      {"nvfp4 (group 16, global scale)", QuantSpecFor(true, 4, true), 16,
       true},
  };
  std::printf("Random weights: %lld x 4096, normal(0, 0.02), every 9973rd x8.\n\n",
              static_cast<long long>(rows));
  std::printf("| format | scheme | error terms differing | units whose chosen "
              "candidate differs |\n| --- | --- | ---: | ---: |\n");
  for (FloatFormat f :
       {FloatFormat::kF32, FloatFormat::kBF16, FloatFormat::kF16}) {
    const Weights w = RandomWeights(f, rows, 4096, 99);
    for (const Scheme& s : schemes) {
      std::vector<int64_t> r;
      switch (f) {
        case FloatFormat::kF32:
          r = CompareSearch<FloatFormat::kF32>(w, s);
          break;
        case FloatFormat::kBF16:
          r = CompareSearch<FloatFormat::kBF16>(w, s);
          break;
        case FloatFormat::kF16:
          r = CompareSearch<FloatFormat::kF16>(w, s);
          break;
      }
      std::printf("| %s | %s | %lld of %lld (%.2e) | %lld of %lld (%.2e) |\n",
                  f == FloatFormat::kF32    ? "f32"
                  : f == FloatFormat::kBF16 ? "bf16"
                                            : "f16",
                  s.name, static_cast<long long>(r[3]),
                  static_cast<long long>(r[2]),
                  static_cast<double>(r[3]) / r[2],
                  static_cast<long long>(r[1]), static_cast<long long>(r[0]),
                  static_cast<double>(r[1]) / r[0]);
    }
  }
  // Cost per element, on |e|-like values.
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> expo(-30, 0);
  std::vector<float> in(1 << 20);
  for (float& a : in) a = static_cast<float>(std::exp2(expo(rng)));
  std::vector<float> out(in.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (int rep = 0; rep < 3; ++rep) {
    SimdPowNormForTest(FloatFormat::kF32, in.data(),
                       static_cast<int64_t>(in.size()), 2.4f, out.data());
  }
  const double simd_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() -
                                               t0)
          .count() /
      (3.0 * in.size());
  std::printf("\nCost per element, one thread (%s):\n\n", 
              SimdTargetName(ActiveSimdTarget()).c_str());
  std::printf("| pow | ns per element |\n| --- | ---: |\n");
  std::printf("| PowPositive, scalar | %.2f |\n",
              NsPerCall([](float a) { return PowPositive(a, 2.4f); }, in));
  std::printf("| PowPositive, SIMD kernel (incl. load/store) | %.2f |\n",
              simd_ns);
  std::printf("| std::pow (double) | %.2f |\n",
              NsPerCall([](float a) {
                return static_cast<float>(std::pow(static_cast<double>(a), 2.4));
              }, in));
  std::printf("| std::pow (long double), correctly rounded reference | %.2f |\n",
              NsPerCall([](float a) { return CorrectPow(a, 2.4f); }, in));
  return 0;
}

}  // namespace
}  // namespace qcal

int main(int argc, char** argv) { return qcal::Main(argc, argv); }
