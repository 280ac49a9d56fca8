// Chooses the widest row-kernel build the CPU supports, once.
#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

#include "row_kernels.h"

namespace pada_fast {

const RowKernels& row_kernels_default();
const RowKernels& row_kernels_avx2();
const RowKernels& row_kernels_avx512();

namespace {

const RowKernels& choose() {
  const char* forced = std::getenv("PADA_FAST_CPU_ISA");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  if (forced && *forced) {
    const std::string want(forced);
    if (want == "default") return row_kernels_default();
    if (want == "avx2") {
      TORCH_CHECK(avx2, "PADA_FAST_CPU_ISA=avx2 but this CPU lacks AVX2/FMA");
      return row_kernels_avx2();
    }
    if (want == "avx512") {
      TORCH_CHECK(avx512, "PADA_FAST_CPU_ISA=avx512 but this CPU lacks AVX-512 (F, DQ, BW, VL)");
      return row_kernels_avx512();
    }
    TORCH_CHECK(false, "PADA_FAST_CPU_ISA must be default, avx2 or avx512, got ", want);
  }
  if (avx512) return row_kernels_avx512();
  if (avx2) return row_kernels_avx2();
  return row_kernels_default();
}

}  // namespace

const RowKernels& row_kernels() {
  static const RowKernels& kernels = choose();
  return kernels;
}

std::string cpu_isa() { return row_kernels().name; }

}  // namespace pada_fast
