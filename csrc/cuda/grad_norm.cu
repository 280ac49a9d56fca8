// Per-operation gradient-norm accumulation, CUDA. Same contract as cpu/grad_norm.cpp.
// The host plan (grad_norm_plan.h) lists 64K-element chunks grouped by slot; its metadata goes to
// the device with one asynchronous copy from pinned memory (no synchronisation).
// Launch 1 (the multi-tensor launch): one block per chunk; threads stride over the chunk, square
//   and sum in float, block-reduce, write the chunk's partial.
// Launch 2: one thread per distinct slot sums its chunks' partials in order (deterministic),
//   norm_sum[slot] += sqrt(sum), step_count[slot] += 1.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include "../checks.h"
#include "../grad_norm_plan.h"

namespace pada_fast {
namespace {

constexpr int64_t kChunk = 1 << 16;
constexpr int kThreads = 256;

enum DType : int64_t { kF32 = 0, kF64 = 1, kF16 = 2, kBF16 = 3 };

// Metadata per chunk, packed as int64: pointer, begin, end, dtype.
constexpr int kMetaFields = 4;

__device__ __forceinline__ float load_as_float(int64_t dtype, const void* base, int64_t j) {
  switch (dtype) {
    case kF32: return static_cast<const float*>(base)[j];
    case kF64: return static_cast<float>(static_cast<const double*>(base)[j]);
    case kF16: return __half2float(static_cast<const __half*>(base)[j]);
    default: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[j]);
  }
}

__global__ void chunk_squares_kernel(const int64_t* __restrict__ meta, float* __restrict__ partial) {
  const int64_t* m = meta + blockIdx.x * kMetaFields;
  const void* base = reinterpret_cast<const void*>(m[0]);
  const int64_t begin = m[1], end = m[2], dtype = m[3];
  float sum = 0.f;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const float v = load_as_float(dtype, base, j);
    sum += v * v;
  }
  __shared__ float warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
    partial[blockIdx.x] = total;
  }
}

__global__ void slot_finish_kernel(const int64_t* __restrict__ slot_ids, const int64_t* __restrict__ slot_chunk_end,
                                   const float* __restrict__ partial, int64_t num_slots,
                                   float* __restrict__ norm_sum, float* __restrict__ step_count) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s >= num_slots) return;
  const int64_t first = s == 0 ? 0 : slot_chunk_end[s - 1];
  double squares = 0.0;
  for (int64_t k = first; k < slot_chunk_end[s]; ++k) squares += partial[k];
  norm_sum[slot_ids[s]] += static_cast<float>(sqrt(squares));
  step_count[slot_ids[s]] += 1.0f;
}

int64_t dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return kF32;
    case at::kDouble: return kF64;
    case at::kHalf: return kF16;
    default: return kBF16;
  }
}

void grad_norm_accumulate_cuda(const c10::List<std::optional<at::Tensor>>& grads, at::IntArrayRef slots,
                               const at::Tensor& norm_sum, const at::Tensor& step_count) {
  check_grad_norm_buffers(norm_sum, step_count, slots, grads.size());
  if (slots.empty()) return;
  c10::cuda::CUDAGuard guard(norm_sum.device());
  const GradNormPlan plan = make_grad_norm_plan(grads, slots, kChunk);
  const int64_t chunks = plan.chunk_tensor.size();
  const int64_t num_slots = plan.slot_ids.size();
  // One pinned host buffer: chunk metadata, then slot ids, then slot chunk ends.
  const int64_t meta_len = chunks * kMetaFields + 2 * num_slots;
  auto host = at::empty({meta_len}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* h = host.data_ptr<int64_t>();
  for (int64_t k = 0; k < chunks; ++k) {
    const at::Tensor& t = plan.tensors[plan.chunk_tensor[k]];
    TORCH_CHECK(t.device() == norm_sum.device(), "gradient on ", t.device(),
                " but the accumulator is on ", norm_sum.device());
    h[k * kMetaFields + 0] = reinterpret_cast<int64_t>(t.data_ptr());
    h[k * kMetaFields + 1] = plan.chunk_begin[k];
    h[k * kMetaFields + 2] = plan.chunk_end[k];
    h[k * kMetaFields + 3] = dtype_code(t.scalar_type());
  }
  for (int64_t s = 0; s < num_slots; ++s) {
    h[chunks * kMetaFields + s] = plan.slot_ids[s];
    h[chunks * kMetaFields + num_slots + s] = plan.slot_chunk_end[s];
  }
  auto meta = host.to(norm_sum.device(), /*non_blocking=*/true);
  const int64_t* d = meta.data_ptr<int64_t>();
  auto partial = at::empty({std::max<int64_t>(chunks, 1)}, norm_sum.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (chunks > 0) {
    chunk_squares_kernel<<<chunks, kThreads, 0, stream>>>(d, partial.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const int finish_threads = 128;
  slot_finish_kernel<<<(num_slots + finish_threads - 1) / finish_threads, finish_threads, 0, stream>>>(
      d + chunks * kMetaFields, d + chunks * kMetaFields + num_slots, partial.data_ptr<float>(), num_slots,
      norm_sum.data_ptr<float>(), step_count.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(pada_fast, CUDA, m) {
  m.impl("grad_norm_accumulate_", &grad_norm_accumulate_cuda);
}

}  // namespace pada_fast
