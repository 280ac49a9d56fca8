// Per-operation gradient-norm accumulation, CPU.
// For each distinct slot s named in `slots`: norm_sum[s] += sqrt(sum over its tensors of
// ||g||^2), step_count[s] += 1. Threads: every gradient is cut into 64K-element chunks (see
// grad_norm_plan.h); at::parallel_for spreads chunks over threads, so work is parallel across
// tensors and within large ones. Each chunk's sum of squares is a vectorised float sum, chunks are
// combined per slot in double, in a fixed order. Float chunks use the
// instruction-set-specific kernel of row_kernels.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "../checks.h"
#include "../grad_norm_plan.h"
#include "row_kernels.h"

namespace pada_fast {
namespace {

constexpr int64_t kChunk = 1 << 16;

template <typename scalar_t>
double chunk_sum_of_squares(const scalar_t* x, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return row_kernels().sum_squares(x + begin, end - begin);
  }
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = begin; j < end; ++j) {
    const acc_t v = static_cast<acc_t>(x[j]);
    sum += v * v;
  }
  return static_cast<double>(sum);
}

void grad_norm_accumulate_cpu(const c10::List<std::optional<at::Tensor>>& grads, at::IntArrayRef slots,
                              const at::Tensor& norm_sum, const at::Tensor& step_count) {
  check_grad_norm_buffers(norm_sum, step_count, slots, grads.size());
  const GradNormPlan plan = make_grad_norm_plan(grads, slots, kChunk);
  const int64_t chunks = plan.chunk_tensor.size();
  std::vector<double> partial(chunks, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const at::Tensor& t = plan.tensors[plan.chunk_tensor[k]];
      TORCH_CHECK(t.device().is_cpu(), "gradient on ", t.device(), " passed to the CPU kernel");
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "grad_norm_cpu", [&] {
        partial[k] = chunk_sum_of_squares(t.data_ptr<scalar_t>(), plan.chunk_begin[k], plan.chunk_end[k]);
      });
    }
  });
  float* sums = norm_sum.data_ptr<float>();
  float* counts = step_count.data_ptr<float>();
  int64_t k = 0;
  for (size_t s = 0; s < plan.slot_ids.size(); ++s) {
    double squares = 0.0;
    for (; k < plan.slot_chunk_end[s]; ++k) squares += partial[k];
    sums[plan.slot_ids[s]] += static_cast<float>(std::sqrt(squares));
    counts[plan.slot_ids[s]] += 1.0f;
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(pada_fast, CPU, m) {
  m.impl("grad_norm_accumulate_", &grad_norm_accumulate_cpu);
}

}  // namespace pada_fast
