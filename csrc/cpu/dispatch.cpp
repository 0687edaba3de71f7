// The choice of the CPU kernels' ISA level (see dispatch.h), and the ops that report it:
// tempattn_C::cpu_capability and tempattn_C::cpu_capabilities. Compiled for the baseline ISA.
#include <Python.h>

#include "cpu/dispatch.h"

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <string>

namespace tempattn::cpu {
namespace {

constexpr const char* kEnvVar = "TEMPATTN_CPU_CAPABILITY";
constexpr const char* kNames[kCapabilityCount] = {"default", "avx2", "avx512"};

bool compiled(Capability c) {
  switch (c) {
    case Capability::kDefault: return true;
    case Capability::kAvx2: return TEMPATTN_CPU_AVX2 != 0;
    case Capability::kAvx512: return TEMPATTN_CPU_AVX512 != 0;
  }
  return false;
}

// Whether this CPU, and the OS's saved register state, can run a level's code. GCC's and Clang's
// __builtin_cpu_supports report AVX / AVX-512 features only when XGETBV says the OS saves the
// YMM / ZMM registers.
bool cpu_supports(Capability c) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  switch (c) {
    case Capability::kDefault: return true;
    case Capability::kAvx2: return avx2;
    case Capability::kAvx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
  return false;
#else
  return c == Capability::kDefault;
#endif
}

Capability best_runnable() {
  Capability best = Capability::kDefault;
  for (Capability c : runnable_capabilities()) best = std::max(best, c);
  return best;
}

std::string lowered(const char* value) {
  std::string s(value);
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

struct Choice {
  Capability level;
  std::string warning;  // why a requested level was lowered, or empty
};

// The widest runnable level, or the one TEMPATTN_CPU_CAPABILITY asks for: an unknown value is an
// error; a level this CPU (or this build) cannot run is lowered to the best runnable, with a warning.
Choice choose() {
  const Capability best = best_runnable();
  const char* value = std::getenv(kEnvVar);
  if (value == nullptr || *value == '\0') return {best, {}};
  const std::string name = lowered(value);
  const auto* found = std::find(std::begin(kNames), std::end(kNames), name);
  TORCH_CHECK_VALUE(found != std::end(kNames), kEnvVar, " must be one of default, avx2, avx512 (or unset: the widest ",
                    "this CPU supports, here ", capability_name(best), "), got '", value, "'");
  const auto requested = static_cast<Capability>(found - std::begin(kNames));
  if (requested <= best) return {requested, {}};
  return {best, c10::str(kEnvVar, "=", name, " asks for a level that ",
                         compiled(requested) ? "this CPU cannot run" : "this build lacks", "; the CPU kernels run at ",
                         capability_name(best), ", the widest available here")};
}

// A Python RuntimeWarning (torch.ops calls do not turn TORCH_WARN into one), else TORCH_WARN. Under
// `-W error` the warning is raised as the calling op's error.
void warn(const std::string& message) {
  if (!Py_IsInitialized()) {
    TORCH_WARN(message);
    return;
  }
  const PyGILState_STATE gil = PyGILState_Ensure();
  const bool raised = PyErr_WarnEx(PyExc_RuntimeWarning, message.c_str(), 1) != 0;
  if (raised) PyErr_Clear();
  PyGILState_Release(gil);
  TORCH_CHECK(!raised, message);
}

std::string active_capability_name() { return capability_name(active_capability()); }

std::vector<std::string> runnable_capability_names() {
  std::vector<std::string> names;
  for (Capability c : runnable_capabilities()) names.emplace_back(capability_name(c));
  return names;
}

}  // namespace

const char* capability_name(Capability c) { return kNames[static_cast<int>(c)]; }

std::vector<Capability> runnable_capabilities() {
  std::vector<Capability> levels;
  for (int i = 0; i < kCapabilityCount; ++i) {
    const auto c = static_cast<Capability>(i);
    if (compiled(c) && cpu_supports(c)) levels.push_back(c);
  }
  return levels;
}

Capability active_capability() {
  // A function-local static: initialised once, by the first caller, thread-safely; if choose()
  // throws, the next call tries again (and throws again). The warning is given outside that
  // initialisation, by the first caller only and without making others wait: it takes the GIL,
  // which a thread waiting on the initialisation may hold.
  static const Choice chosen = choose();
  if (C10_UNLIKELY(!chosen.warning.empty())) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) warn(chosen.warning);
  }
  return chosen.level;
}

}  // namespace tempattn::cpu

TORCH_LIBRARY_FRAGMENT(tempattn_C, m) {
  m.def("cpu_capability() -> str", &tempattn::cpu::active_capability_name);
  m.def("cpu_capabilities() -> str[]", &tempattn::cpu::runnable_capability_names);
}
