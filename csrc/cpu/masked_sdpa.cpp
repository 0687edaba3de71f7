// masked_sdpa on the CPU: the tiled attention core with no score modifier.
#include <torch/library.h>

#include "cpu/common/attention_launch.h"
#include "cpu/common/score_mods.h"

namespace tempattn::cpu {
namespace {

AttentionCall masked_sdpa_call(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::optional<at::Tensor>& key_valid, const std::optional<at::Tensor>& key_bias,
                               bool causal, double dropout_p, int64_t seed, double scale) {
  check_qkv(op, q, k, v);
  check_key_args(op, q, k, key_valid, key_bias);
  if (causal) check_causal_lengths(op, q, k);
  check_dropout(op, dropout_p);
  return {q, k, v, key_valid, key_bias, causal, /*window=*/std::nullopt, dropout_p, seed, scale};
}

const auto make_no_mod = [](auto) { return NoMod{}; };

std::tuple<at::Tensor, at::Tensor> masked_sdpa_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   const std::optional<at::Tensor>& key_valid,
                                                   const std::optional<at::Tensor>& key_bias, bool causal,
                                                   double dropout_p, int64_t seed, double scale) {
  return run_forward(masked_sdpa_call("masked_sdpa_fwd", q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale),
                     make_no_mod);
}

// [dq, dk, dv] + [dkey_bias] when key_bias is given.
std::vector<at::Tensor> masked_sdpa_bwd(const at::Tensor& grad_out, const at::Tensor& delta, const at::Tensor& lse,
                                        const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const std::optional<at::Tensor>& key_valid,
                                        const std::optional<at::Tensor>& key_bias, bool causal, double dropout_p,
                                        int64_t seed, double scale) {
  const char* op = "masked_sdpa_bwd";
  const AttentionCall call = masked_sdpa_call(op, q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale);
  check_backward_args(op, grad_out, delta, lse, q, v);
  return run_backward(call, grad_out, delta, lse, make_no_mod).with({});
}

}  // namespace
}  // namespace tempattn::cpu

TORCH_LIBRARY_FRAGMENT(tempattn_C, m) {
  m.def(
      "masked_sdpa_fwd(Tensor q, Tensor k, Tensor v, Tensor? key_valid, Tensor? key_bias, bool causal, "
      "float dropout_p, int seed, float scale) -> (Tensor, Tensor)");
  m.def(
      "masked_sdpa_bwd(Tensor grad_out, Tensor delta, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor? key_valid, "
      "Tensor? key_bias, bool causal, float dropout_p, int seed, float scale) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(tempattn_C, CPU, m) {
  m.impl("masked_sdpa_fwd", &tempattn::cpu::masked_sdpa_fwd);
  m.impl("masked_sdpa_bwd", &tempattn::cpu::masked_sdpa_bwd);
}
