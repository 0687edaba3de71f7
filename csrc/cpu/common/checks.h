// Argument checks of the CPU operators, with messages naming the argument, expected vs actual.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace tempattn::cpu {

inline at::ScalarType accumulate_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), op, ": `", name, "` must be a CPU tensor, got device ", t.device());
}

// q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv): one float dtype, last dim of stride 1.
inline void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"q", q}, {"k", k}, {"v", v}}) {
    check_cpu(op, name, t);
    TORCH_CHECK(t.dim() == 4, op, ": `", name, "` must be 4-D (B, H, T, D), got shape ", t.sizes());
    TORCH_CHECK(t.scalar_type() == q.scalar_type(), op, ": `", name, "` must have q's dtype ", q.scalar_type(),
                ", got ", t.scalar_type());
    TORCH_CHECK(t.size(3) == 0 || t.stride(3) == 1, op, ": `", name,
                "` must be contiguous in the last dim (stride 1), got strides ", t.strides());
    TORCH_CHECK(t.numel() > 0, op, ": `", name, "` must be non-empty, got shape ", t.sizes());
  }
  TORCH_CHECK(at::isFloatingType(q.scalar_type()), op, ": `q` must be float16, bfloat16, float32 or float64, got ",
              q.scalar_type());
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3), op,
              ": `k` must be (B, H, Tk, D) with q's B, H, D = ", q.size(0), ", ", q.size(1), ", ", q.size(3),
              ", got shape ", k.sizes());
  TORCH_CHECK(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == k.size(2), op,
              ": `v` must be (B, H, Tk, Dv) with B, H = ", q.size(0), ", ", q.size(1), " and Tk = ", k.size(2),
              ", got shape ", v.sizes());
}

// A contiguous CPU tensor of an exact shape and dtype.
inline void check_exact(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef shape,
                        at::ScalarType dtype) {
  check_cpu(op, name, t);
  TORCH_CHECK(t.sizes() == shape, op, ": `", name, "` must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": `", name, "` must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": `", name, "` must be contiguous, got strides ", t.strides());
}

inline void check_optional(const char* op, const char* name, const std::optional<at::Tensor>& t,
                           at::IntArrayRef shape, at::ScalarType dtype) {
  if (t.has_value()) check_exact(op, name, *t, shape, dtype);
}

// key_valid (B, Tk) bool and key_bias (B, H, Tk) in the accumulation dtype, both optional.
inline void check_key_args(const char* op, const at::Tensor& q, const at::Tensor& k,
                           const std::optional<at::Tensor>& key_valid, const std::optional<at::Tensor>& key_bias) {
  check_optional(op, "key_valid", key_valid, {q.size(0), k.size(2)}, at::kBool);
  check_optional(op, "key_bias", key_bias, {q.size(0), q.size(1), k.size(2)}, accumulate_dtype(q.scalar_type()));
}

inline void check_causal_lengths(const char* op, const at::Tensor& q, const at::Tensor& k) {
  TORCH_CHECK(q.size(2) <= k.size(2), op, ": causal attention needs Tq <= Tk, got Tq = ", q.size(2),
              " and Tk = ", k.size(2));
}

inline void check_dropout(const char* op, double dropout_p) {
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, op, ": `dropout_p` must be in [0, 1), got ", dropout_p);
}

// grad_out (B, H, Tq, Dv) in q's dtype, last dim stride 1; delta and lse (B, H, Tq) in the accumulation dtype.
inline void check_backward_args(const char* op, const at::Tensor& grad_out, const at::Tensor& delta,
                                const at::Tensor& lse, const at::Tensor& q, const at::Tensor& v) {
  check_cpu(op, "grad_out", grad_out);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({q.size(0), q.size(1), q.size(2), v.size(3)}), op,
              ": `grad_out` must have shape (B, H, Tq, Dv) = ", at::IntArrayRef({q.size(0), q.size(1), q.size(2), v.size(3)}),
              ", got ", grad_out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == q.scalar_type(), op, ": `grad_out` must have q's dtype ", q.scalar_type(),
              ", got ", grad_out.scalar_type());
  TORCH_CHECK(grad_out.stride(3) == 1, op, ": `grad_out` must be contiguous in the last dim, got strides ",
              grad_out.strides());
  const at::ScalarType acc = accumulate_dtype(q.scalar_type());
  check_exact(op, "delta", delta, {q.size(0), q.size(1), q.size(2)}, acc);
  check_exact(op, "lse", lse, {q.size(0), q.size(1), q.size(2)}, acc);
}

}  // namespace tempattn::cpu
