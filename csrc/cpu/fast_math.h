// exp for the CPU row kernels. std::exp does not vectorise; this Cephes-style expf (range reduction
// to [-ln2/2, ln2/2], degree-5 polynomial, exponent built from bits; ~2 ulp) is plain arithmetic,
// so loops calling it vectorise under `#pragma omp simd`. Only ever called with x <= 0 here
// (logits minus their row maximum), so only underflow needs a clamp. The clamps vectorise only
// with -fno-trapping-math, which the build passes.
//
// Included once per instruction set (see row_kernels_impl.h): everything here lives in the
// namespace PADA_FAST_ISA so that versions compiled for different instruction sets never merge.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace pada_fast {
namespace PADA_FAST_ISA {

inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // Round to nearest by adding and removing 1.5 * 2^23 (floor() is a libm call on baseline x86-64
  // and would stop vectorisation).
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

inline double fast_exp(double x) { return std::exp(x); }

}  // namespace PADA_FAST_ISA
}  // namespace pada_fast
