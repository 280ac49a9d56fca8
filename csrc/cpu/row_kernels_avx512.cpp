// Row kernels for the avx512 instruction set: see row_kernels_impl.h. The standard headers are
// included before the target options so that only pada_fast's own code is compiled for them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma,prefer-vector-width=512")
#define PADA_FAST_ISA isa_avx512
#define PADA_FAST_ISA_NAME "avx512"
#include "row_kernels_impl.h"

namespace pada_fast {
const RowKernels& row_kernels_avx512() { return isa_avx512::table(); }
}  // namespace pada_fast
