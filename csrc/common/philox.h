// Philox4x32-10 dropout keep mask, bit for bit the definition in tempattn/ops/common/philox.py
// (and tempattn.testing.dropout_keep_mask). Host and device.
#pragma once

#include "common/hd.h"

namespace tempattn::common {

// First output word of Philox4x32-10 for counter (c0, c1, c2, c3) and key (k0, k1).
TEMPATTN_HD uint32_t philox_first_word(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t prod_a = uint64_t{0xD2511F53u} * c0;
    const uint64_t prod_b = uint64_t{0xCD9E8D57u} * c2;
    const uint32_t next_c0 = static_cast<uint32_t>(prod_b >> 32) ^ c1 ^ k0;
    const uint32_t next_c2 = static_cast<uint32_t>(prod_a >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(prod_b);
    c3 = static_cast<uint32_t>(prod_a);
    c0 = next_c0;
    c2 = next_c2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

// uint32 threshold floor(p * 2^32) (saturated): an element is kept iff its Philox word is >= it.
TEMPATTN_HD uint32_t dropout_threshold(double p) {
  const double scaled = p * 4294967296.0;
  return scaled >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(scaled);
}

// Keep decision of element (b, h, i, j): counter (j, i, h, b), key = the seed's two 32-bit halves.
struct DropoutMask {
  bool active = false;
  uint32_t key0 = 0, key1 = 0, threshold = 0;
  double keep_scale = 1.0;  // 1 / (1 - p)

  static DropoutMask make(double p, int64_t seed) {
    DropoutMask mask;
    mask.active = p > 0.0;
    const uint64_t key = static_cast<uint64_t>(seed);
    mask.key0 = static_cast<uint32_t>(key & 0xFFFFFFFFu);
    mask.key1 = static_cast<uint32_t>(key >> 32);
    mask.threshold = dropout_threshold(p);
    mask.keep_scale = 1.0 / (1.0 - p);
    return mask;
  }

  TEMPATTN_HD bool keep(int64_t b, int64_t h, int64_t i, int64_t j) const {
    return philox_first_word(static_cast<uint32_t>(j), static_cast<uint32_t>(i), static_cast<uint32_t>(h),
                             static_cast<uint32_t>(b), key0, key1) >= threshold;
  }

  // The factor of a probability: keep_scale when kept, 0 when dropped, 1 without dropout.
  template <typename T>
  TEMPATTN_HD T factor(int64_t b, int64_t h, int64_t i, int64_t j) const {
    if (!active) return T(1);
    return keep(b, h, i, j) ? static_cast<T>(keep_scale) : T(0);
  }
};

}  // namespace tempattn::common
