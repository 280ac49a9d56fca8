// Row kernels for the default instruction set: see row_kernels_impl.h. The standard headers are
// included before the target options so that only pada_fast's own code is compiled for them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>


#define PADA_FAST_ISA isa_base
#define PADA_FAST_ISA_NAME "default"
#include "row_kernels_impl.h"

namespace pada_fast {
const RowKernels& row_kernels_default() { return isa_base::table(); }
}  // namespace pada_fast
