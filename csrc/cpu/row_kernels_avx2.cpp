// Row kernels for the avx2 instruction set: see row_kernels_impl.h. The standard headers are
// included before the target options so that only pada_fast's own code is compiled for them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#pragma GCC target("avx2,fma")
#define PADA_FAST_ISA isa_avx2
#define PADA_FAST_ISA_NAME "avx2"
#include "row_kernels_impl.h"

namespace pada_fast {
const RowKernels& row_kernels_avx2() { return isa_avx2::table(); }
}  // namespace pada_fast
