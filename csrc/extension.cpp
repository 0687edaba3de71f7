// tempattn._C: the Python module object (with the hot path's checks, fastpath.h) and the tempattn_C
// op library.
// Operators register themselves from their binding files (csrc/cpu/*.cpp,
// csrc/cuda/*.cu) with TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL.
#include <Python.h>
#include <torch/library.h>

#include "fastpath.h"

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "tempattn C++/CUDA kernels", -1,
                                          tempattn_fastpath_methods()};
  return PyModule_Create(&module_def);
}
}

namespace {
bool cuda_built() {
#ifdef TEMPATTN_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace

TORCH_LIBRARY(tempattn_C, m) {
  m.def("cuda_built() -> bool", &cuda_built);
}
