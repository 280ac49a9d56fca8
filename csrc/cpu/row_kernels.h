// Per-row CPU kernels of the fused ops, compiled once per instruction set (baseline x86-64, AVX2+FMA,
// AVX-512) and chosen at run time from what the CPU supports. Set PADA_FAST_CPU_ISA=default|avx2|
// avx512 to force one (tests compare all of them against the reference).
#pragma once
#include <cstdint>
#include <string>

namespace pada_fast {

struct RowKernels {
  const char* name;
  // Rows [0, rows) of z [rows, c] (float32): loss, importance, lse per row (see ops.cpp).
  void (*ce_forward)(const float* z, const int64_t* y, int64_t rows, int64_t c, float smoothing,
                     float* loss, float* importance, float* lse, float* scratch);
  void (*ce_forward_f64)(const double* z, const int64_t* y, int64_t rows, int64_t c, double smoothing,
                         double* loss, double* importance, double* lse, double* scratch);
  // grad[i, j] = (exp(z[i, j] - lse[i]) - t[i, j]) * grad_loss[i]
  void (*ce_backward)(const float* z, const int64_t* y, const float* lse, const float* grad_loss,
                      int64_t rows, int64_t c, float smoothing, float* out);
  void (*ce_backward_f64)(const double* z, const int64_t* y, const double* lse, const double* grad_loss,
                          int64_t rows, int64_t c, double smoothing, double* out);
  double (*sum_squares)(const float* x, int64_t n);
};

const RowKernels& row_kernels();
std::string cpu_isa();

}  // namespace pada_fast
