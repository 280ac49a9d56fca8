// Cross-entropy with DA importance, CUDA. Same math as cpu/cross_entropy_importance.cpp:
//   lse = log sum_j exp(z_j), loss = lse - (1-e) z_y - (e/C) sum_j z_j,
//   importance = ||exp(z - lse) - t||_2,  backward grad_z = (exp(z - lse) - t) * grad_loss.
// Threads: one warp per row, kWarpsPerBlock rows per block. Each lane strides over the row
// (coalesced), the warp reduces with shuffles; the row is read three times (max; sums; importance),
// the repeats hit L1/L2. Accumulation in float (double for double input). An out-of-range target
// gives NaN outputs for its row: raising would need a host-device synchronisation.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "../checks.h"

namespace pada_fast {
namespace {

constexpr int kWarpsPerBlock = 8;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    T other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = other > v ? other : v;
  }
  return v;
}

__device__ __forceinline__ float device_exp(float x) { return __expf(x); }
__device__ __forceinline__ double device_exp(double x) { return exp(x); }

template <typename scalar_t, typename acc_t>
__global__ void ce_forward_kernel(const scalar_t* __restrict__ logits, const int64_t* __restrict__ target,
                                  acc_t* __restrict__ loss, acc_t* __restrict__ importance,
                                  acc_t* __restrict__ lse_out, int64_t rows, int64_t c, acc_t smoothing) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const scalar_t* z = logits + row * c;
  const int64_t y = target[row];
  if (y < 0 || y >= c) {
    if (lane == 0) {
      const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
      loss[row] = nan;
      importance[row] = nan;
      lse_out[row] = nan;
    }
    return;
  }
  acc_t m = -std::numeric_limits<acc_t>::infinity();
  for (int64_t j = lane; j < c; j += 32) {
    const acc_t v = static_cast<acc_t>(z[j]);
    m = v > m ? v : m;
  }
  m = warp_max(m);
  acc_t sum_exp = 0, sum_z = 0;
  for (int64_t j = lane; j < c; j += 32) {
    const acc_t v = static_cast<acc_t>(z[j]);
    sum_exp += device_exp(v - m);
    sum_z += v;
  }
  sum_exp = warp_sum(sum_exp);
  sum_z = warp_sum(sum_z);
  const acc_t lse = m + log(sum_exp);
  const acc_t off = smoothing / static_cast<acc_t>(c);
  const acc_t on = acc_t(1) - smoothing + off;
  acc_t sq = 0;
  for (int64_t j = lane; j < c; j += 32) {
    const acc_t d = device_exp(static_cast<acc_t>(z[j]) - lse) - (j == y ? on : off);
    sq += d * d;
  }
  sq = warp_sum(sq);
  if (lane == 0) {
    loss[row] = lse - (acc_t(1) - smoothing) * static_cast<acc_t>(z[y]) - off * sum_z;
    importance[row] = sqrt(sq);
    lse_out[row] = lse;
  }
}

// Elementwise: one thread per logit, grid-stride.
template <typename scalar_t, typename acc_t>
__global__ void ce_backward_kernel(const acc_t* __restrict__ grad_loss, const scalar_t* __restrict__ logits,
                                   const int64_t* __restrict__ target, const acc_t* __restrict__ lse,
                                   scalar_t* __restrict__ grad, int64_t total, int64_t c, acc_t smoothing) {
  const acc_t off = smoothing / static_cast<acc_t>(c);
  const acc_t on = acc_t(1) - smoothing + off;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = k / c, j = k % c;
    const acc_t p = device_exp(static_cast<acc_t>(logits[k]) - lse[row]);
    grad[k] = static_cast<scalar_t>((p - (j == target[row] ? on : off)) * grad_loss[row]);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_entropy_with_importance_cuda(
    const at::Tensor& logits_in, const at::Tensor& target_in, double label_smoothing) {
  check_cross_entropy_inputs(logits_in, target_in, label_smoothing);
  c10::cuda::CUDAGuard guard(logits_in.device());
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  const int64_t b = logits.size(0), c = logits.size(1);
  auto opts = logits.options().dtype(accumulation_type(logits));
  auto loss = at::empty({b}, opts), importance = at::empty({b}, opts), lse = at::empty({b}, opts);
  if (b == 0) return {loss, importance, lse};
  const dim3 block(32 * kWarpsPerBlock);
  const dim3 grid((b + kWarpsPerBlock - 1) / kWarpsPerBlock);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ce_importance_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    ce_forward_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(
        logits.data_ptr<scalar_t>(), target.data_ptr<int64_t>(), loss.data_ptr<acc_t>(),
        importance.data_ptr<acc_t>(), lse.data_ptr<acc_t>(), b, c, static_cast<acc_t>(label_smoothing));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {loss, importance, lse};
}

at::Tensor cross_entropy_with_importance_backward_cuda(const at::Tensor& grad_loss_in,
                                                       const at::Tensor& logits_in,
                                                       const at::Tensor& target_in,
                                                       const at::Tensor& lse_in, double label_smoothing) {
  check_cross_entropy_inputs(logits_in, target_in, label_smoothing);
  c10::cuda::CUDAGuard guard(logits_in.device());
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  const int64_t b = logits.size(0), c = logits.size(1);
  auto acc = accumulation_type(logits);
  const auto grad_loss = grad_loss_in.to(acc).contiguous();
  const auto lse = lse_in.to(acc).contiguous();
  TORCH_CHECK_VALUE(grad_loss.numel() == b && lse.numel() == b,
                    "grad_loss and lse must have one entry per row of logits");
  auto grad = at::empty_like(logits);
  const int64_t total = b * c;
  if (total == 0) return grad;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 65535);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ce_importance_backward_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    ce_backward_kernel<scalar_t, acc_t><<<blocks, threads, 0, stream>>>(
        grad_loss.data_ptr<acc_t>(), logits.data_ptr<scalar_t>(), target.data_ptr<int64_t>(),
        lse.data_ptr<acc_t>(), grad.data_ptr<scalar_t>(), total, c, static_cast<acc_t>(label_smoothing));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(pada_fast, CUDA, m) {
  m.impl("cross_entropy_with_importance", &cross_entropy_with_importance_cuda);
  m.impl("cross_entropy_with_importance_backward", &cross_entropy_with_importance_backward_cuda);
}

}  // namespace pada_fast
