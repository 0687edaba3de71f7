// Runtime ISA dispatch of the CPU kernels, as ATen's CPU_CAPABILITY dispatch does.
//
// setup.py compiles every csrc/cpu/kernels/*.cpp once per ISA level into namespace
// tempattn::cpu::<level> (see cpu/common/capability.h): DEFAULT (the x86-64 / aarch64 baseline,
// no -m flags), AVX2 (-mavx2 -mfma -mf16c) and AVX512 (-mavx512f -mavx512bw -mavx512vl
// -mavx512dq -mfma -mf16c). Each of those copies defines its operator's kernel table below in
// its level's namespace. The bindings (cpu/bindings.cpp) register each operator once; a call
// goes to the table of the level active_capability() chose at the first call: the widest this
// CPU supports (cpuid, with the OS's register state checked), lowered by the environment
// variable TEMPATTN_CPU_CAPABILITY=default|avx2|avx512.
//
// This header and everything that runs before that choice (cpu/bindings.cpp, cpu/dispatch.cpp,
// cpu/common/block_cache.cpp, extension.cpp) are compiled for the baseline only.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

// Which levels this build holds, besides DEFAULT (setup.py defines them for every source).
#if !defined(TEMPATTN_CPU_AVX2)
#define TEMPATTN_CPU_AVX2 0
#endif
#if !defined(TEMPATTN_CPU_AVX512)
#define TEMPATTN_CPU_AVX512 0
#endif

namespace tempattn::cpu {

enum class Capability : int8_t { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };
constexpr int kCapabilityCount = 3;

// "default", "avx2", "avx512": the values of TEMPATTN_CPU_CAPABILITY.
const char* capability_name(Capability c);

// The level the kernels run at, chosen at the first call (thread-safe) and kept for the process.
// Throws c10::ValueError for an unknown TEMPATTN_CPU_CAPABILITY value; a level above what this
// CPU (or build) supports is lowered to the best supported one, with a warning.
Capability active_capability();

// Levels this build holds and this CPU can run, lowest first.
std::vector<Capability> runnable_capabilities();

// ---------------------------------------------------------------------------- kernel tables
// One per operator: the entry points of one level's copy of csrc/cpu/kernels/<op>.cpp.

struct MaskedSdpaKernels {
  std::tuple<at::Tensor, at::Tensor> (*fwd)(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const std::optional<at::Tensor>& key_valid,
                                            const std::optional<at::Tensor>& key_bias, bool causal,
                                            double dropout_p, int64_t seed, double scale);
  std::vector<at::Tensor> (*bwd)(const at::Tensor& grad_out, const at::Tensor& out,
                                 const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                                 const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const std::optional<at::Tensor>& key_valid,
                                 const std::optional<at::Tensor>& key_bias, bool causal, double dropout_p,
                                 int64_t seed, double scale);
};

struct RelposAttentionKernels {
  std::tuple<at::Tensor, at::Tensor> (*fwd)(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& rel_bias, const std::optional<at::Tensor>& key_valid,
                                            const std::optional<at::Tensor>& key_bias,
                                            std::optional<int64_t> window, double dropout_p, int64_t seed,
                                            double scale);
  std::vector<at::Tensor> (*bwd)(const at::Tensor& grad_out, const at::Tensor& out,
                                 const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                                 const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& rel_bias, const std::optional<at::Tensor>& key_valid,
                                 const std::optional<at::Tensor>& key_bias, std::optional<int64_t> window,
                                 double dropout_p, int64_t seed, double scale);
};

struct DecayAttentionKernels {
  std::tuple<at::Tensor, at::Tensor> (*fwd)(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& log_gamma, const at::Tensor& alpha_logits,
                                            const std::optional<at::Tensor>& times,
                                            const std::optional<at::Tensor>& key_valid,
                                            const std::optional<at::Tensor>& key_bias,
                                            std::optional<int64_t> window, double eps, double dropout_p,
                                            int64_t seed, double scale);
  std::vector<at::Tensor> (*bwd)(const at::Tensor& grad_out, const at::Tensor& out,
                                 const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                                 const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& log_gamma, const at::Tensor& alpha_logits,
                                 const std::optional<at::Tensor>& times, const std::optional<at::Tensor>& key_valid,
                                 const std::optional<at::Tensor>& key_bias, std::optional<int64_t> window,
                                 double eps, double dropout_p, int64_t seed, double scale);
};

// Each level's tables, defined (constant-initialised: no code runs at load) in that level's
// copy of csrc/cpu/kernels/<op>.cpp.
#define TEMPATTN_DECLARE_CPU_KERNELS(level)                       \
  namespace level {                                               \
  extern const MaskedSdpaKernels masked_sdpa_kernels;             \
  extern const RelposAttentionKernels relpos_attention_kernels;   \
  extern const DecayAttentionKernels decay_attention_kernels;     \
  }

TEMPATTN_DECLARE_CPU_KERNELS(DEFAULT)
#if TEMPATTN_CPU_AVX2
TEMPATTN_DECLARE_CPU_KERNELS(AVX2)
#endif
#if TEMPATTN_CPU_AVX512
TEMPATTN_DECLARE_CPU_KERNELS(AVX512)
#endif
#undef TEMPATTN_DECLARE_CPU_KERNELS

// The tables of `name` for each level, indexed by Capability; nullptr where the build lacks the level.
#if TEMPATTN_CPU_AVX2
#define TEMPATTN_AVX2_TABLE(name) &::tempattn::cpu::AVX2::name
#else
#define TEMPATTN_AVX2_TABLE(name) nullptr
#endif
#if TEMPATTN_CPU_AVX512
#define TEMPATTN_AVX512_TABLE(name) &::tempattn::cpu::AVX512::name
#else
#define TEMPATTN_AVX512_TABLE(name) nullptr
#endif
#define TEMPATTN_CPU_KERNEL_TABLES(name) \
  { &::tempattn::cpu::DEFAULT::name, TEMPATTN_AVX2_TABLE(name), TEMPATTN_AVX512_TABLE(name) }

}  // namespace tempattn::cpu
