// The pada_fast op library: every op's schema, defined once. Per-device kernels live in
// cpu/ and cuda/ and register themselves with TORCH_LIBRARY_IMPL(pada_fast, CPU|CUDA).
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "build_config.h"
#include "cpu/row_kernels.h"

namespace pada_fast {

// "key=value;..." pairs that `pada-fast info` shows: what this binary was built with.
std::string build_info() {
  std::string info = "version=" PADA_FAST_VERSION ";torch=" PADA_FAST_TORCH_VERSION;
#ifdef PADA_FAST_WITH_CUDA
  info += ";cuda=1;cuda_archs=" PADA_FAST_CUDA_ARCHS;
#else
  info += ";cuda=0;cuda_archs=";
#endif
#ifdef _OPENMP
  info += ";openmp=1";
#else
  info += ";openmp=0";
#endif
  info += ";cpu_isa=" + cpu_isa();
  return info;
}

}  // namespace pada_fast

TORCH_LIBRARY(pada_fast, m) {
  // Per-sample cross-entropy with label smoothing, the DA importance ||softmax - target||_2 and
  // the row log-sum-exp (saved for backward). Outputs are float32 (float64 for float64 logits).
  m.def("cross_entropy_with_importance(Tensor logits, Tensor target, float label_smoothing)"
        " -> (Tensor loss, Tensor importance, Tensor lse)");
  m.def("cross_entropy_with_importance_backward(Tensor grad_loss, Tensor logits, Tensor target,"
        " Tensor lse, float label_smoothing) -> Tensor");
  // One step of PA statistics: for each distinct slot s in `slots`, norm_sum[s] += sqrt(sum of
  // ||grads[i]||^2 over i with slots[i] == s) and step_count[s] += 1. Undefined grads are skipped.
  m.def("grad_norm_accumulate_(Tensor?[] grads, int[] slots, Tensor(a!) norm_sum,"
        " Tensor(b!) step_count) -> ()");
  m.def("build_info() -> str", &pada_fast::build_info);
}

// Lets `import pada_fast._C` load this library; the ops register through static initialisers.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
