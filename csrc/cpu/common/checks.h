// Argument checks of the CPU operators, with messages naming the argument, expected vs actual.
#pragma once
#include "cpu/common/capability.h"
#include "common/tensor_checks.h"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdio>
#include <array>
#include <optional>
#include <string>

namespace tempattn::cpu::CPU_CAPABILITY {

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
    common::check_qkv_layout(op, name, t, q.scalar_type());
  }
  TORCH_CHECK(at::isFloatingType(q.scalar_type()), op, ": `q` must be float16, bfloat16, float32 or float64, got ",
              q.scalar_type());
  common::check_kv_shapes(op, q, k, v);
}

// A contiguous CPU tensor of an exact shape and dtype.
inline void check_exact(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef shape,
                        at::ScalarType dtype) {
  check_cpu(op, name, t);
  common::check_exact_layout(op, name, t, shape, dtype);
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
inline void check_backward_args(const char* op, const at::Tensor& grad_out, const at::Tensor& out,
                                const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                                const at::Tensor& q, const at::Tensor& v) {
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"grad_out", grad_out}, {"out", out}}) {
    check_cpu(op, name, t);
    common::check_output_layout(op, name, t, q, v);
  }
  const at::ScalarType acc = accumulate_dtype(q.scalar_type());
  check_optional(op, "grad_lse", grad_lse, {q.size(0), q.size(1), q.size(2)}, acc);
  check_exact(op, "lse", lse, {q.size(0), q.size(1), q.size(2)}, acc);
}

// ----------------------------------------------------------------------------------- value checks
// Checks that read a parameter's values, run by each operator's forward. The Python layer leaves
// them to the C++ operator for CPU tensors (one pass here instead of several torch calls there);
// the messages and the ValueError type are those of tempattn/ops/common/validation.py.

// Calls fn(const scalar_t* data, int64_t n) on a contiguous float or double tensor.
template <typename Fn>
void with_values(const at::Tensor& t, const Fn& fn) {
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "tempattn_value_check",
                             [&] { fn(t.const_data_ptr<scalar_t>(), t.numel()); });
}

inline void check_finite_values(const char* op, const char* name, const at::Tensor& t) {
  with_values(t, [&](const auto* x, int64_t n) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += std::isfinite(x[i]) ? 0 : 1;
    TORCH_CHECK_VALUE(bad == 0, op, ": `", name, "` must be finite, got ", bad,
                      " non-finite value(s); hint: check the parameter's initialisation and learning rate");
  });
}

// log_gamma <= 0 everywhere (after check_finite_values).
inline void check_non_positive_log_gamma(const char* op, const at::Tensor& log_gamma) {
  with_values(log_gamma, [&](const auto* x, int64_t n) {
    double top = -INFINITY;
    for (int64_t i = 0; i < n; ++i) top = std::max(top, static_cast<double>(x[i]));
    char shown[32];
    std::snprintf(shown, sizeof(shown), "%.4g", top);
    TORCH_CHECK_VALUE(top <= 0, op,
                      ": `log_gamma` must be <= 0 (decay rates gamma = exp(log_gamma) in (0, 1]), got max ", shown,
                      "; hint: parametrise it as -softplus(x) or log(sigmoid(x))");
  });
}

// times (B, Tk) finite and non-decreasing along each row.
inline void check_times_values(const char* op, const at::Tensor& times) {
  check_finite_values(op, "times", times);
  const int64_t B = times.size(0), Tk = times.size(1);
  with_values(times, [&](const auto* x, int64_t) {
    bool sorted = true;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 1; j < Tk; ++j) sorted &= x[b * Tk + j] >= x[b * Tk + j - 1];
    TORCH_CHECK_VALUE(sorted, op, ": `times` must be non-decreasing along each row, got a decrease; "
                      "hint: sort the events by time (padding can repeat the last timestamp)");
  });
}

}  // namespace tempattn::cpu::CPU_CAPABILITY
