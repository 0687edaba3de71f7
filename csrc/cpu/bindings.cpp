// The CPU operators' schemas and their one CPU registration each: a call forwards to the kernel
// table of the ISA level chosen at the first call (dispatch.h). Compiled for the baseline ISA.
#include <torch/library.h>

#include <utility>

#include "cpu/dispatch.h"

namespace tempattn::cpu {
namespace {

// The active level's table among one operator's tables (indexed by Capability).
template <typename Table>
const Table& active_table(const Table* const (&tables)[kCapabilityCount]) {
  const Table* table = tables[static_cast<int>(active_capability())];
  TORCH_INTERNAL_ASSERT(table != nullptr, "tempattn: no CPU kernels for level ", capability_name(active_capability()));
  return *table;
}

const MaskedSdpaKernels& masked_sdpa() {
  static constexpr const MaskedSdpaKernels* tables[] = TEMPATTN_CPU_KERNEL_TABLES(masked_sdpa_kernels);
  return active_table(tables);
}

const RelposAttentionKernels& relpos_attention() {
  static constexpr const RelposAttentionKernels* tables[] = TEMPATTN_CPU_KERNEL_TABLES(relpos_attention_kernels);
  return active_table(tables);
}

const DecayAttentionKernels& decay_attention() {
  static constexpr const DecayAttentionKernels* tables[] = TEMPATTN_CPU_KERNEL_TABLES(decay_attention_kernels);
  return active_table(tables);
}

// Forward<&masked_sdpa, &MaskedSdpaKernels::fwd>::call(args...) = masked_sdpa().fwd(args...): a
// function with the entry's exact signature, which torch::Library::impl registers.
template <auto kTable, auto kEntry>
struct Forward;

template <typename Table, const Table& (*kTable)(), typename R, typename... Args, R (*Table::*kEntry)(Args...)>
struct Forward<kTable, kEntry> {
  static R call(Args... args) { return (kTable().*kEntry)(std::forward<Args>(args)...); }
};

}  // namespace
}  // namespace tempattn::cpu

TORCH_LIBRARY_FRAGMENT(tempattn_C, m) {
  m.def(
      "masked_sdpa_fwd(Tensor q, Tensor k, Tensor v, Tensor? key_valid, Tensor? key_bias, bool causal, "
      "float dropout_p, int seed, float scale) -> (Tensor, Tensor)");
  m.def(
      "masked_sdpa_bwd(Tensor grad_out, Tensor out, Tensor? grad_lse, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor? key_valid, "
      "Tensor? key_bias, bool causal, float dropout_p, int seed, float scale) -> Tensor[]");
  m.def(
      "relpos_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor rel_bias, Tensor? key_valid, Tensor? key_bias, "
      "int? window, float dropout_p, int seed, float scale) -> (Tensor, Tensor)");
  m.def(
      "relpos_attention_bwd(Tensor grad_out, Tensor out, Tensor? grad_lse, Tensor lse, Tensor q, Tensor k, Tensor v, "
      "Tensor rel_bias, Tensor? key_valid, Tensor? key_bias, int? window, float dropout_p, int seed, float scale) "
      "-> Tensor[]");
  m.def(
      "decay_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor log_gamma, Tensor alpha_logits, Tensor? times, "
      "Tensor? key_valid, Tensor? key_bias, int? window, float eps, float dropout_p, int seed, float scale) "
      "-> (Tensor, Tensor)");
  m.def(
      "decay_attention_bwd(Tensor grad_out, Tensor out, Tensor? grad_lse, Tensor lse, Tensor q, Tensor k, Tensor v, "
      "Tensor log_gamma, Tensor alpha_logits, Tensor? times, Tensor? key_valid, Tensor? key_bias, int? window, "
      "float eps, float dropout_p, int seed, float scale) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(tempattn_C, CPU, m) {
  using namespace tempattn::cpu;
  m.impl("masked_sdpa_fwd", &Forward<&masked_sdpa, &MaskedSdpaKernels::fwd>::call);
  m.impl("masked_sdpa_bwd", &Forward<&masked_sdpa, &MaskedSdpaKernels::bwd>::call);
  m.impl("relpos_attention_fwd", &Forward<&relpos_attention, &RelposAttentionKernels::fwd>::call);
  m.impl("relpos_attention_bwd", &Forward<&relpos_attention, &RelposAttentionKernels::bwd>::call);
  m.impl("decay_attention_fwd", &Forward<&decay_attention, &DecayAttentionKernels::fwd>::call);
  m.impl("decay_attention_bwd", &Forward<&decay_attention, &DecayAttentionKernels::bwd>::call);
}
