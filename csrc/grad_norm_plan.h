// Host-side work plan for the per-operation gradient-norm accumulation, shared by the CPU and CUDA
// kernels. Tensors are grouped by slot (stable order), each cut into fixed-size chunks; a chunk's
// partial sum of squares is reduced per slot in chunk order, so results are deterministic and
// independent of the thread count.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <optional>
#include <vector>

namespace pada_fast {

struct GradNormPlan {
  std::vector<at::Tensor> tensors;       // contiguous gradients, grouped by slot
  std::vector<int64_t> chunk_tensor;     // chunk -> index into tensors
  std::vector<int64_t> chunk_begin;      // chunk -> first element
  std::vector<int64_t> chunk_end;        // chunk -> one past the last element
  std::vector<int64_t> slot_ids;         // distinct slots, ascending
  std::vector<int64_t> slot_chunk_end;   // distinct slot -> one past its last chunk
};

inline GradNormPlan make_grad_norm_plan(const c10::List<std::optional<at::Tensor>>& grads,
                                        at::IntArrayRef slots, int64_t chunk_size) {
  std::vector<size_t> order(slots.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return slots[a] < slots[b]; });
  GradNormPlan plan;
  for (size_t pos = 0; pos < order.size(); ++pos) {
    size_t i = order[pos];
    const std::optional<at::Tensor> g = grads.get(i);
    int64_t slot = slots[i];
    if (plan.slot_ids.empty() || plan.slot_ids.back() != slot) {
      if (!plan.slot_ids.empty()) plan.slot_chunk_end.push_back(plan.chunk_tensor.size());
      plan.slot_ids.push_back(slot);
    }
    if (!g.has_value() || !g->defined() || g->numel() == 0) continue;
    auto t = g->scalar_type();
    TORCH_CHECK_TYPE(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
                     "gradient ", i, " has unsupported dtype ", t);
    int64_t tensor_index = plan.tensors.size();
    // A dense tensor in any memory format (e.g. a channels-last conv gradient) occupies numel
    // consecutive elements from data_ptr; the sum of squares does not care about their order.
    plan.tensors.push_back(g->is_non_overlapping_and_dense() ? *g : g->contiguous());
    int64_t n = g->numel();
    for (int64_t b = 0; b < n; b += chunk_size) {
      plan.chunk_tensor.push_back(tensor_index);
      plan.chunk_begin.push_back(b);
      plan.chunk_end.push_back(std::min(n, b + chunk_size));
    }
  }
  if (!plan.slot_ids.empty()) plan.slot_chunk_end.push_back(plan.chunk_tensor.size());
  return plan;
}

}  // namespace pada_fast
