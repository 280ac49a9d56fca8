// Cross-entropy with DA importance, CPU.
// Forward, per row i of logits z [B, C] with target y and smoothing e (t = (1-e)onehot(y) + e/C):
//   lse = log sum_j exp(z_j), loss = lse - (1-e) z_y - (e/C) sum_j z_j,
//   importance = ||exp(z - lse) - t||_2.   Backward: grad_z = (exp(z - lse) - t) * grad_loss.
// Threads: at::parallel_for splits the rows into blocks; each block runs the row kernels of
// row_kernels_impl.h (three vectorised sweeps per row, float accumulation; double for double
// input), compiled for the widest instruction set the CPU has. Half/bfloat16 blocks are widened
// into a per-thread float buffer first (and gradients narrowed on the way out).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../checks.h"
#include "row_kernels.h"

namespace pada_fast {
namespace {

void check_targets_in_range(const at::Tensor& target, int64_t c) {
  const int64_t* y = target.data_ptr<int64_t>();
  for (int64_t i = 0; i < target.numel(); ++i) {
    TORCH_CHECK_INDEX(y[i] >= 0 && y[i] < c, "target[", i, "] = ", y[i],
                      " is not a class index in [0, ", c, ")");
  }
}

int64_t grain_rows(int64_t c) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(c, 1)); }

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
  const RowKernels& k = row_kernels();
  const int64_t* y = target.data_ptr<int64_t>();
  if (logits.scalar_type() == at::kDouble) {
    const double* z = logits.data_ptr<double>();
    double *l = loss.data_ptr<double>(), *imp = importance.data_ptr<double>(), *s = lse.data_ptr<double>();
    at::parallel_for(0, b, grain_rows(c), [&](int64_t begin, int64_t end) {
      std::vector<double> scratch(c);
      k.ce_forward_f64(z + begin * c, y + begin, end - begin, c, label_smoothing, l + begin, imp + begin,
                       s + begin, scratch.data());
    });
    return {loss, importance, lse};
  }
  float *l = loss.data_ptr<float>(), *imp = importance.data_ptr<float>(), *s = lse.data_ptr<float>();
  const float eps = static_cast<float>(label_smoothing);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ce_importance_cpu", [&] {
    const scalar_t* z = logits.data_ptr<scalar_t>();
    at::parallel_for(0, b, grain_rows(c), [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(c), wide;
      const float* rows = reinterpret_cast<const float*>(z + begin * c);
      if constexpr (!std::is_same_v<scalar_t, float>) {
        wide.resize((end - begin) * c);
        for (int64_t j = 0; j < (end - begin) * c; ++j) wide[j] = static_cast<float>(z[begin * c + j]);
        rows = wide.data();
      }
      if constexpr (!std::is_same_v<scalar_t, double>) {
        k.ce_forward(rows, y + begin, end - begin, c, eps, l + begin, imp + begin, s + begin, scratch.data());
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
  auto grad = at::empty_like(logits, at::MemoryFormat::Contiguous);
  if (b == 0) return grad;
  check_targets_in_range(target, c);
  const RowKernels& k = row_kernels();
  const int64_t* y = target.data_ptr<int64_t>();
  if (logits.scalar_type() == at::kDouble) {
    const double *z = logits.data_ptr<double>(), *g = grad_loss.data_ptr<double>(), *s = lse.data_ptr<double>();
    double* out = grad.data_ptr<double>();
    at::parallel_for(0, b, grain_rows(c), [&](int64_t begin, int64_t end) {
      k.ce_backward_f64(z + begin * c, y + begin, s + begin, g + begin, end - begin, c, label_smoothing,
                        out + begin * c);
    });
    return grad;
  }
  const float *g = grad_loss.data_ptr<float>(), *s = lse.data_ptr<float>();
  const float eps = static_cast<float>(label_smoothing);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ce_importance_backward_cpu", [&] {
    const scalar_t* z = logits.data_ptr<scalar_t>();
    scalar_t* out = grad.data_ptr<scalar_t>();
    at::parallel_for(0, b, grain_rows(c), [&](int64_t begin, int64_t end) {
      if constexpr (std::is_same_v<scalar_t, float>) {
        k.ce_backward(reinterpret_cast<const float*>(z) + begin * c, y + begin, s + begin, g + begin, end - begin,
                      c, eps, reinterpret_cast<float*>(out) + begin * c);
      } else if constexpr (!std::is_same_v<scalar_t, double>) {
        const int64_t n = (end - begin) * c;
        std::vector<float> wide(n), result(n);
        for (int64_t j = 0; j < n; ++j) wide[j] = static_cast<float>(z[begin * c + j]);
        k.ce_backward(wide.data(), y + begin, s + begin, g + begin, end - begin, c, eps, result.data());
        for (int64_t j = 0; j < n; ++j) out[begin * c + j] = static_cast<scalar_t>(result[j]);
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
