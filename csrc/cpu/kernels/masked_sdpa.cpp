// masked_sdpa on the CPU: the tiled attention core with no score modifier.
// Compiled once per ISA level into tempattn::cpu::<level> (cpu/common/capability.h); the
// operator is registered once, in cpu/bindings.cpp.
#include "cpu/common/capability.h"

#include "cpu/common/attention_launch.h"
#include "cpu/common/score_mods.h"
#include "cpu/dispatch.h"

namespace tempattn::cpu::CPU_CAPABILITY {
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
std::vector<at::Tensor> masked_sdpa_bwd(const at::Tensor& grad_out, const at::Tensor& out,
                                        const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                                        const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const std::optional<at::Tensor>& key_valid,
                                        const std::optional<at::Tensor>& key_bias, bool causal, double dropout_p,
                                        int64_t seed, double scale) {
  const char* op = "masked_sdpa_bwd";
  const AttentionCall call = masked_sdpa_call(op, q, k, v, key_valid, key_bias, causal, dropout_p, seed, scale);
  check_backward_args(op, grad_out, out, grad_lse, lse, q, v);
  return run_backward(call, grad_out, out, grad_lse, lse, make_no_mod).with({});
}

}  // namespace

// This level's entry points (declared in cpu/dispatch.h), constant-initialised.
const MaskedSdpaKernels masked_sdpa_kernels{&masked_sdpa_fwd, &masked_sdpa_bwd};

}  // namespace tempattn::cpu::CPU_CAPABILITY
