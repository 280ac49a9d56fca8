// Input checks shared by the CPU and CUDA implementations, so both reject the same inputs with
// the same messages as the Python reference (pada_fast/ops/reference.py).
#pragma once
#include <ATen/ATen.h>

namespace pada_fast {

inline void check_cross_entropy_inputs(const at::Tensor& logits, const at::Tensor& target,
                                       double label_smoothing) {
  TORCH_CHECK_VALUE(logits.dim() == 2, "logits must be 2-D [batch, classes], got shape ",
                    logits.sizes(), "; flatten extra dimensions first");
  auto t = logits.scalar_type();
  TORCH_CHECK_TYPE(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble,
                   "logits must be float16, bfloat16, float32 or float64, got ", t);
  TORCH_CHECK_TYPE(target.scalar_type() == at::kLong,
                   "target must hold int64 class indices, got ", target.scalar_type(),
                   "; use target.long()");
  TORCH_CHECK_VALUE(target.dim() == 1 && target.size(0) == logits.size(0),
                    "target must be 1-D with one class index per row of logits: logits ",
                    logits.sizes(), ", target ", target.sizes());
  TORCH_CHECK_VALUE(logits.size(0) == 0 || logits.size(1) >= 1, "logits must have at least one class");
  TORCH_CHECK_VALUE(label_smoothing >= 0.0 && label_smoothing <= 1.0,
                    "label_smoothing must lie in [0, 1], got ", label_smoothing);
  TORCH_CHECK(logits.device() == target.device(), "logits and target must be on the same device, got ",
              logits.device(), " and ", target.device());
}

inline at::ScalarType accumulation_type(const at::Tensor& logits) {
  return logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_grad_norm_buffers(const at::Tensor& norm_sum, const at::Tensor& step_count,
                                    at::IntArrayRef slots, size_t num_grads) {
  TORCH_CHECK_VALUE(slots.size() == num_grads, "grads and slots must have the same length, got ",
                    num_grads, " and ", slots.size());
  TORCH_CHECK_TYPE(norm_sum.scalar_type() == at::kFloat && step_count.scalar_type() == at::kFloat,
                   "norm_sum and step_count must be float32, got ", norm_sum.scalar_type(), " and ",
                   step_count.scalar_type());
  TORCH_CHECK_VALUE(norm_sum.is_contiguous() && step_count.is_contiguous() &&
                        norm_sum.numel() == step_count.numel(),
                    "norm_sum and step_count must be contiguous buffers of the same size");
  TORCH_CHECK(norm_sum.device() == step_count.device(), "norm_sum and step_count must share a device");
  for (auto s : slots) {
    TORCH_CHECK_VALUE(s >= 0 && s < norm_sum.numel(), "slot ", s, " is outside the accumulator of ",
                      norm_sum.numel(), " entries (slot = layer * candidates + candidate)");
  }
}

}  // namespace pada_fast
