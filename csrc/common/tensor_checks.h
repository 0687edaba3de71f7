// Argument checks shared by the CPU operators (csrc/cpu) and the CUDA ones (csrc/cuda/ops.cu): the
// layout rules and their messages, which name the argument and give the expected and actual value.
// Each caller checks the device first. Host code only.
//
// Internal linkage (an unnamed namespace): the CPU kernels include this once per ISA level, and with
// external linkage the linker could resolve every level's calls to one level's copy (AVX-512 code on
// the baseline path).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>

namespace tempattn::common {
namespace {

// One of q, k, v: 4-D, in `dtype` (q's), unit stride in its last dim, not empty.
inline void check_qkv_layout(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype) {
  TORCH_CHECK(t.dim() == 4, op, ": `", name, "` must be 4-D (B, H, T, D), got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": `", name, "` must have q's dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.size(3) == 0 || t.stride(3) == 1, op, ": `", name,
              "` must be contiguous in the last dim (stride 1), got strides ", t.strides());
  TORCH_CHECK(t.numel() > 0, op, ": `", name, "` must be non-empty, got shape ", t.sizes());
}

// k (B, H, Tk, D) and v (B, H, Tk, Dv) against q (B, H, Tq, D), all three 4-D.
inline void check_kv_shapes(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3), op,
              ": `k` must be (B, H, Tk, D) with q's B, H, D = ", q.size(0), ", ", q.size(1), ", ", q.size(3),
              ", got shape ", k.sizes());
  TORCH_CHECK(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == k.size(2), op,
              ": `v` must be (B, H, Tk, Dv) with B, H = ", q.size(0), ", ", q.size(1), " and Tk = ", k.size(2),
              ", got shape ", v.sizes());
}

// A contiguous tensor of an exact shape and dtype.
inline void check_exact_layout(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef shape,
                               at::ScalarType dtype) {
  TORCH_CHECK(t.sizes() == shape, op, ": `", name, "` must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": `", name, "` must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": `", name, "` must be contiguous, got strides ", t.strides());
}

// An output-shaped tensor (grad_out, out): (B, H, Tq, Dv) in q's dtype, unit stride in its last dim.
inline void check_output_layout(const char* op, const char* name, const at::Tensor& t, const at::Tensor& q,
                                const at::Tensor& v) {
  const std::array<int64_t, 4> shape{q.size(0), q.size(1), q.size(2), v.size(3)};
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), op, ": `", name, "` must have shape (B, H, Tq, Dv) = ",
              at::IntArrayRef(shape), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == q.scalar_type(), op, ": `", name, "` must have q's dtype ", q.scalar_type(),
              ", got ", t.scalar_type());
  TORCH_CHECK(t.stride(3) == 1, op, ": `", name, "` must be contiguous in the last dim, got strides ", t.strides());
}

}  // namespace
}  // namespace tempattn::common
