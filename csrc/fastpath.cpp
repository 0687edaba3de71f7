// The per-call checks of the operators' hot path as three Python functions of tempattn._C.
//
// Each public operator call used to read about twenty tensor attributes from Python (shape, dtype,
// stride, device of q, k, v and the parameters), at 0.2-0.5 us each: more than the kernel takes at
// decoding sizes. Here they are one C call each. They only *recognise* the common, well-formed case;
// anything else returns the "not recognised" value and the Python code takes its general path,
// which raises the error that names the argument (tempattn/ops/common/validation.py). So no
// message lives here, and the Python fallbacks (tempattn/ops/common/fastpath.py) must accept
// exactly what these accept: tests/ops/test_fastpath.py compares them input by input.
#include <Python.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/autograd/python_variable.h>

#include "fastpath.h"

namespace {

bool is_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

// The dtype the kernels accumulate in, which parameters are cast to (as reference.accumulate_dtype).
at::ScalarType accumulate_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The tensor behind a Python object, or nullptr when it is not a torch.Tensor (subclasses included).
const at::Tensor* as_tensor(PyObject* obj) {
  return THPVariable_Check(obj) ? &THPVariable_Unpack(obj) : nullptr;
}

PyObject* device_type_name(c10::DeviceType type) {
  // Interned once per type: the result keys the backend cache, so it must compare equal cheaply.
  static PyObject* names[static_cast<int>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)] = {};
  PyObject*& name = names[static_cast<int>(type)];
  if (name == nullptr) {
    name = PyUnicode_InternFromString(c10::DeviceTypeName(type, /*lower_case=*/true).c_str());
  }
  Py_XINCREF(name);
  return name;
}

bool head_dim_ok(int64_t d, int64_t max_head_dim) { return 1 <= d && d <= max_head_dim; }

// qkv_layout(q, k, v, causal, max_head_dim) -> (B, H, Tq, Tk, D, device_type) when q, k, v are
// well formed (validation._qkv_well_formed and check_lengths accept them), else None.
PyObject* qkv_layout(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError, "qkv_layout(q, k, v, causal, max_head_dim) takes 5 arguments");
    return nullptr;
  }
  const at::Tensor* q = as_tensor(args[0]);
  const at::Tensor* k = as_tensor(args[1]);
  const at::Tensor* v = as_tensor(args[2]);
  const int causal = PyObject_IsTrue(args[3]);
  const int64_t max_head_dim = PyLong_AsLongLong(args[4]);
  if (causal < 0 || PyErr_Occurred()) return nullptr;
  if (q == nullptr || k == nullptr || v == nullptr || q->dim() != 4 || k->dim() != 4 || v->dim() != 4) {
    Py_RETURN_NONE;
  }
  const auto dtype = q->scalar_type();
  const int64_t B = q->size(0), H = q->size(1), Tq = q->size(2), D = q->size(3), Tk = k->size(2);
  const bool ok = is_float(dtype) && k->scalar_type() == dtype && v->scalar_type() == dtype && k->size(0) == B &&
                  v->size(0) == B && k->size(1) == H && v->size(1) == H && k->size(3) == D && v->size(2) == Tk &&
                  head_dim_ok(D, max_head_dim) && head_dim_ok(v->size(3), max_head_dim) && q->stride(3) == 1 &&
                  k->stride(3) == 1 && v->stride(3) == 1 && k->device() == q->device() &&
                  v->device() == q->device() && !(causal && Tq > Tk);
  if (!ok) Py_RETURN_NONE;
  PyObject* device = device_type_name(q->device().type());
  return device == nullptr ? nullptr : Py_BuildValue("(LLLLLN)", B, H, Tq, Tk, D, device);
}

// param_width(t, q, rows, width) -> t.shape[1] when t is a 2-D (rows, width) tensor (any width >= 1
// when width < 0) on q's device, already in q's accumulation dtype and contiguous (what as_param
// would make it), else -1.
PyObject* param_width(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "param_width(t, q, rows, width) takes 4 arguments");
    return nullptr;
  }
  const at::Tensor* t = as_tensor(args[0]);
  const at::Tensor* q = as_tensor(args[1]);
  int rows_overflow = 0, width_overflow = 0;  // a size past int64 (window = sys.maxsize, + 1) fits no tensor
  const int64_t rows = PyLong_AsLongLongAndOverflow(args[2], &rows_overflow);
  const int64_t width = PyLong_AsLongLongAndOverflow(args[3], &width_overflow);
  if (PyErr_Occurred()) return nullptr;
  const bool ok = !rows_overflow && !width_overflow && t != nullptr && q != nullptr && t->dim() == 2 && t->size(0) == rows && t->size(1) >= 1 &&
                  (width < 0 || t->size(1) == width) && is_float(q->scalar_type()) &&
                  t->scalar_type() == accumulate_dtype(q->scalar_type()) && t->is_contiguous() &&
                  t->device() == q->device();
  return PyLong_FromLongLong(ok ? t->size(1) : -1);
}

// The dispatcher state that the custom-op layer must see: a Python dispatch mode (fake tensors,
// make_fx) or an active functorch transform (vmap, grad, jvp: while functorch's layer stack is not
// empty, it keeps its front-mode key in the thread's included set).
bool tracing_state_active() {
  return c10::impl::TorchDispatchModeTLS::any_modes_set() ||
         c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode);
}

// eager_mode(*tensors) -> kEagerNoGrad, kEagerGrad or kTrace (fastpath.h): how an operator call
// with these tensors (None allowed) runs outside torch.compile.
PyObject* eager_mode(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (tracing_state_active()) return PyLong_FromLong(kTrace);
  bool needs_grad = false;
  for (Py_ssize_t i = 0; i < nargs; ++i) {
    if (args[i] == Py_None) continue;
    if (!THPVariable_CheckExact(args[i])) return PyLong_FromLong(kTrace);  // a subclass or not a tensor
    needs_grad = needs_grad || THPVariable_Unpack(args[i]).requires_grad();
  }
  return PyLong_FromLong(needs_grad && at::GradMode::is_enabled() ? kEagerGrad : kEagerNoGrad);
}

PyMethodDef methods[] = {
    {"qkv_layout", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(qkv_layout)), METH_FASTCALL,
     "(B, H, Tq, Tk, D, device_type) of well-formed q, k, v, else None"},
    {"param_width", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(param_width)), METH_FASTCALL,
     "t.shape[1] of a kernel-ready (rows, width) parameter, else -1"},
    {"eager_mode", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(eager_mode)), METH_FASTCALL,
     "0: eager without grad, 1: eager with grad, 2: the custom op must trace"},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyMethodDef* tempattn_fastpath_methods() { return methods; }
