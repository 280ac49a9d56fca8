// Cross-entropy with DA importance, CPU.
// Forward, per row i of logits z [B, C] with target y and smoothing e (t = (1-e)onehot(y) + e/C):
//   m = max_j z_j, S = sum_j exp(z_j - m), lse = m + log S,
//   loss = lse - (1-e) z_y - (e/C) sum_j z_j,   importance = ||exp(z - lse) - t||_2.
// Backward: grad_z = (exp(z - lse) - t) * grad_loss.
// Threads: rows are split across at::parallel_for; each row is read in three vectorised sweeps
// (max; exp, sum of exp and of z; importance from the kept exps), in float (double for double input). Half/bfloat16 rows
// are widened into a per-thread float buffer first.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>
#include <tuple>
#include <vector>

#include "../checks.h"
#include "fast_math.h"

namespace pada_fast {
namespace {

template <typename acc_t>
struct RowResult {
  acc_t loss, importance, lse;
};

// `e` is per-thread scratch of length c: the sweep that sums exp(z_j - m) keeps the exponentials,
// so the importance sweep needs no second exp.
template <typename acc_t>
RowResult<acc_t> forward_row(const acc_t* z, int64_t c, int64_t y, acc_t smoothing, acc_t* e) {
  acc_t m = -std::numeric_limits<acc_t>::infinity();
  for (int64_t j = 0; j < c; ++j) m = z[j] > m ? z[j] : m;
  acc_t sum_exp = 0, sum_z = 0;
#pragma omp simd reduction(+ : sum_exp, sum_z)
  for (int64_t j = 0; j < c; ++j) {
    e[j] = fast_exp(z[j] - m);
    sum_exp += e[j];
    sum_z += z[j];
  }
  const acc_t lse = m + std::log(sum_exp);
  const acc_t inv = acc_t(1) / sum_exp;
  const acc_t off = smoothing / static_cast<acc_t>(c);  // target mass off the true class
  const acc_t on = acc_t(1) - smoothing + off;          // target mass on the true class
  // ||p - t||^2 = sum_j (p_j - off)^2 with the true class's term replaced by (p_y - on)^2.
  acc_t sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < c; ++j) {
    const acc_t d = e[j] * inv - off;
    sq += d * d;
  }
  const acc_t p_y = e[y] * inv;
  sq += (p_y - on) * (p_y - on) - (p_y - off) * (p_y - off);
  const acc_t loss = lse - (acc_t(1) - smoothing) * z[y] - off * sum_z;
  return {loss, std::sqrt(sq < 0 ? acc_t(0) : sq), lse};  // keeps NaN
}

template <typename scalar_t, typename acc_t>
void backward_row(const acc_t* z, int64_t c, int64_t y, acc_t lse, acc_t grad, acc_t off, acc_t on_minus_off,
                  scalar_t* out) {
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) out[j] = static_cast<scalar_t>((fast_exp(z[j] - lse) - off) * grad);
  out[y] = static_cast<scalar_t>((fast_exp(z[y] - lse) - off - on_minus_off) * grad);
}

template <typename scalar_t, typename acc_t>
const acc_t* widen_row(const scalar_t* row, int64_t c, std::vector<acc_t>& buffer) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return row;
  } else {
    buffer.resize(c);
    for (int64_t j = 0; j < c; ++j) buffer[j] = static_cast<acc_t>(row[j]);
    return buffer.data();
  }
}

void check_targets_in_range(const at::Tensor& target, int64_t c) {
  const int64_t* y = target.data_ptr<int64_t>();
  for (int64_t i = 0; i < target.numel(); ++i) {
    TORCH_CHECK_INDEX(y[i] >= 0 && y[i] < c, "target[", i, "] = ", y[i],
                      " is not a class index in [0, ", c, ")");
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_entropy_with_importance_cpu(
    const at::Tensor& logits_in, const at::Tensor& target_in, double label_smoothing) {
  check_cross_entropy_inputs(logits_in, target_in, label_smoothing);
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  const int64_t b = logits.size(0), c = logits.size(1);
  auto opts = logits.options().dtype(accumulation_type(logits));
  auto loss = at::empty({b}, opts), importance = at::empty({b}, opts), lse = at::empty({b}, opts);
  if (b == 0) return {loss, importance, lse};
  check_targets_in_range(target, c);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ce_importance_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* z = logits.data_ptr<scalar_t>();
    const int64_t* y = target.data_ptr<int64_t>();
    acc_t* out_loss = loss.data_ptr<acc_t>();
    acc_t* out_imp = importance.data_ptr<acc_t>();
    acc_t* out_lse = lse.data_ptr<acc_t>();
    const int64_t grain = std::max<int64_t>(1, 16384 / c);
    at::parallel_for(0, b, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buffer, scratch(c);
      for (int64_t i = begin; i < end; ++i) {
        const acc_t* row = widen_row<scalar_t, acc_t>(z + i * c, c, buffer);
        auto r = forward_row<acc_t>(row, c, y[i], static_cast<acc_t>(label_smoothing), scratch.data());
        out_loss[i] = r.loss;
        out_imp[i] = r.importance;
        out_lse[i] = r.lse;
      }
    });
  });
  return {loss, importance, lse};
}

at::Tensor cross_entropy_with_importance_backward_cpu(const at::Tensor& grad_loss_in,
                                                      const at::Tensor& logits_in,
                                                      const at::Tensor& target_in,
                                                      const at::Tensor& lse_in,
                                                      double label_smoothing) {
  check_cross_entropy_inputs(logits_in, target_in, label_smoothing);
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  const int64_t b = logits.size(0), c = logits.size(1);
  auto acc = accumulation_type(logits);
  const auto grad_loss = grad_loss_in.to(acc).contiguous();
  const auto lse = lse_in.to(acc).contiguous();
  TORCH_CHECK_VALUE(grad_loss.numel() == b && lse.numel() == b,
                    "grad_loss and lse must have one entry per row of logits");
  auto grad = at::empty_like(logits);
  if (b == 0) return grad;
  check_targets_in_range(target, c);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ce_importance_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* z = logits.data_ptr<scalar_t>();
    const int64_t* y = target.data_ptr<int64_t>();
    const acc_t* g = grad_loss.data_ptr<acc_t>();
    const acc_t* l = lse.data_ptr<acc_t>();
    scalar_t* out = grad.data_ptr<scalar_t>();
    const acc_t off = static_cast<acc_t>(label_smoothing) / static_cast<acc_t>(c);
    const acc_t on_minus_off = acc_t(1) - static_cast<acc_t>(label_smoothing);
    const int64_t grain = std::max<int64_t>(1, 16384 / c);
    at::parallel_for(0, b, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buffer;
      for (int64_t i = begin; i < end; ++i) {
        const acc_t* row = widen_row<scalar_t, acc_t>(z + i * c, c, buffer);
        backward_row<scalar_t, acc_t>(row, c, y[i], l[i], g[i], off, on_minus_off, out + i * c);
      }
    });
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(pada_fast, CPU, m) {
  m.impl("cross_entropy_with_importance", &cross_entropy_with_importance_cpu);
  m.impl("cross_entropy_with_importance_backward", &cross_entropy_with_importance_backward_cpu);
}

}  // namespace pada_fast
