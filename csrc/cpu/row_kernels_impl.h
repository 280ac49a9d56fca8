// Row kernels, included by one .cpp per instruction set with PADA_FAST_ISA defined (and, for the
// wider sets, GCC target options switched on before inclusion). Everything is defined inside the
// namespace PADA_FAST_ISA; only a RowKernels table leaves the file.
// Forward per row: m = max z, e_j = exp(z_j - m), S = sum e, lse = m + log S,
//   loss = lse - (1-eps) z_y - (eps/C) sum z, importance = ||e/S - t||_2 (the exps are kept in
//   `scratch`, so the importance sweep needs no second exp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "fast_math.h"
#include "row_kernels.h"

namespace pada_fast {
namespace PADA_FAST_ISA {

template <typename T>
void ce_forward_rows(const T* z_all, const int64_t* y_all, int64_t rows, int64_t c, T smoothing, T* loss,
                     T* importance, T* lse_out, T* e) {
  const T off = smoothing / static_cast<T>(c);  // target mass off the true class
  const T on = T(1) - smoothing + off;          // target mass on the true class
  for (int64_t i = 0; i < rows; ++i) {
    const T* z = z_all + i * c;
    const int64_t y = y_all[i];
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < c; ++j) m = std::max(m, z[j]);
    T sum_exp = 0, sum_z = 0;
#pragma omp simd reduction(+ : sum_exp, sum_z)
    for (int64_t j = 0; j < c; ++j) {
      e[j] = fast_exp(z[j] - m);
      sum_exp += e[j];
      sum_z += z[j];
    }
    const T lse = m + std::log(sum_exp);
    const T inv = T(1) / sum_exp;
    // ||p - t||^2, the true class's term kept apart: adding (p_y - off)^2 ~ 1 and subtracting it
    // again would cancel away a small importance.
    T sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t j = 0; j < y; ++j) {
      const T d = e[j] * inv - off;
      sq += d * d;
    }
#pragma omp simd reduction(+ : sq)
    for (int64_t j = y + 1; j < c; ++j) {
      const T d = e[j] * inv - off;
      sq += d * d;
    }
    const T d_y = e[y] * inv - on;
    sq += d_y * d_y;
    loss[i] = lse - (T(1) - smoothing) * z[y] - off * sum_z;
    importance[i] = std::sqrt(sq);
    lse_out[i] = lse;
  }
}

template <typename T>
void ce_backward_rows(const T* z_all, const int64_t* y_all, const T* lse, const T* grad_loss, int64_t rows,
                      int64_t c, T smoothing, T* out_all) {
  const T off = smoothing / static_cast<T>(c);
  const T on_minus_off = T(1) - smoothing;
  for (int64_t i = 0; i < rows; ++i) {
    const T* z = z_all + i * c;
    T* out = out_all + i * c;
    const T l = lse[i], g = grad_loss[i];
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) out[j] = (fast_exp(z[j] - l) - off) * g;
    out[y_all[i]] -= on_minus_off * g;
  }
}

inline double sum_squares(const float* x, int64_t n) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += x[j] * x[j];
  return static_cast<double>(sum);
}

inline const RowKernels& table() {
  static const RowKernels kernels{
      PADA_FAST_ISA_NAME,     ce_forward_rows<float>, ce_forward_rows<double>, ce_backward_rows<float>,
      ce_backward_rows<double>, sum_squares};
  return kernels;
}

}  // namespace PADA_FAST_ISA
}  // namespace pada_fast
