// Score modifiers plugged into the attention core. A modifier provides
//   RowBias row_bias(b, h, p, j0) const                 the bias of query row (b, h, p) against keys
//                                                       j0, j0 + 1, ...: RowBias::add(x, c) returns
//                                                       the vector x plus m(b, h, p, j0 + c + lane);
//                                                       called for whole vectors of columns
//                                                       c < kMaxRowBiasColumns, only when p >= j0, and
//                                                       must stay in bounds (lanes past the admissible
//                                                       keys may hold anything, the core masks them)
//   int64_t grad_size() const                           length of one (b, h) gradient partial
//   void accumulate_grad(b, h, p, j0, n, const acc_t* ds, double* partial) const
//                                                       folds dS of those scores into the partial
//                                                       (float64: parameter gradients sum over B*T*T)
// The core only calls them on keys admissible by index (0 <= p - j for causal operators).
#pragma once
#include "cpu/common/capability.h"

#include <cstdint>
#include <vector>

#include "cpu/common/vec_utils.h"

namespace tempattn::cpu::CPU_CAPABILITY {

// Plain attention: no modifier, no parameter gradient.
struct NoMod {
  struct RowBias {
    template <typename Vec>
    Vec add(const Vec& x, int64_t) const {
      return x;
    }
  };
  RowBias row_bias(int64_t, int64_t, int64_t, int64_t) const { return {}; }
  int64_t grad_size() const { return 0; }
  template <typename acc_t>
  void accumulate_grad(int64_t, int64_t, int64_t, int64_t, int64_t, const acc_t*, double*) const {}
};

// A modifier that depends on the head and the offset Delta = p - j only, m = m_h(Delta), for
// Delta in [0, length). It is stored reversed, slot(Delta) = length - 1 - Delta, so a row of keys
// reads it forwards (vectorised). Its gradient partial per (b, h) is the sum of dS per offset,
// (length) in the same reversed order, from which the operator derives its parameter gradients.
template <typename acc_t>
struct OffsetTableMod {
  std::vector<acc_t> reversed;  // (H, stride): length slots, then kMaxRowBiasColumns of zero padding
  int64_t length, stride;

  static int64_t slot(int64_t length, int64_t delta) { return length - 1 - delta; }

  // table(h, Delta) gives m_h(Delta).
  template <typename TableFn>
  static OffsetTableMod build(int64_t H, int64_t length, const TableFn& table) {
    const int64_t stride = length + kMaxRowBiasColumns;
    OffsetTableMod mod{std::vector<acc_t>(H * stride, acc_t(0)), length, stride};
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < length; ++d) mod.reversed[h * stride + slot(length, d)] = table(h, d);
    return mod;
  }

  // Keys j0 + c read slot(p - j0) + c <= length - 1 + c: the padding keeps whole vectors in bounds.
  struct RowBias {
    const acc_t* slots;
    template <typename Vec>
    Vec add(const Vec& x, int64_t c) const {
      return x + Vec::loadu(slots + c);
    }
  };
  RowBias row_bias(int64_t, int64_t h, int64_t p, int64_t j0) const {
    return {reversed.data() + h * stride + slot(length, p - j0)};
  }
  int64_t grad_size() const { return length; }
  void accumulate_grad(int64_t, int64_t, int64_t p, int64_t j0, int64_t n, const acc_t* ds, double* partial) const {
    double* sums = partial + slot(length, p - j0);
    for (int64_t c = 0; c < n; ++c) sums[c] += ds[c];
  }
};

}  // namespace tempattn::cpu::CPU_CAPABILITY
