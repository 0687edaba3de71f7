// Which keys a query may attend to by index (causal, window, bottom-right alignment), and the
// tile-range rules derived from it: which keys a block of query rows visits, which query rows a
// block of keys is seen by. Shared by the CPU kernels (block loops, backward chunks) and the CUDA
// kernels (tile skipping); tests/cpu/test_shared_headers.py checks them against brute force.
#pragma once

#include "common/hd.h"

namespace tempattn::common {

// A window of Tk keys or more admits every causal key: callers clamp it with this, so no index
// arithmetic overflows (any int up to sys.maxsize is a valid window). -1 (no window) stays -1.
TEMPATTN_HD int64_t clamp_window(int64_t window, int64_t Tk) { return window < 0 ? -1 : hd_min(window, Tk); }

// [lo, hi) of indices; empty when hi <= lo.
struct Range {
  int64_t lo, hi;
  TEMPATTN_HD bool empty() const { return hi <= lo; }
};

struct Band {
  int64_t Tq, Tk;
  bool causal;
  int64_t window;  // -1: none; else >= 0 and <= Tk (clamp_window); only used when causal

  // Absolute position of query row i (bottom-right alignment): p_i = i + Tk - Tq.
  TEMPATTN_HD int64_t position(int64_t i) const { return i + Tk - Tq; }
  // Causal with a window: each query row sees at most window + 1 keys.
  TEMPATTN_HD bool banded() const { return causal && window >= 0; }
  // Inclusive band of keys admissible by index for a query at position p (empty if last < first).
  TEMPATTN_HD int64_t first_key(int64_t p) const { return banded() ? hd_max<int64_t>(0, p - window) : 0; }
  TEMPATTN_HD int64_t last_key(int64_t p) const { return causal ? hd_min(p, Tk - 1) : Tk - 1; }
  // Key j admissible by index for the query at position p: 0 <= p - j (<= window).
  TEMPATTN_HD bool admits(int64_t p, int64_t j) const { return first_key(p) <= j && j <= last_key(p); }

  // Keys [lo, hi) that query rows [i0, i1) (non-empty) can see: the union of their bands (the
  // bands move right with the row, so it runs from the first row's first key to the last row's last).
  TEMPATTN_HD Range keys_of_rows(int64_t i0, int64_t i1) const {
    return {first_key(position(i0)), last_key(position(i1 - 1)) + 1};
  }
  // Query rows [lo, hi) that see at least one key of [j0, j1) (non-empty).
  TEMPATTN_HD Range rows_of_keys(int64_t j0, int64_t j1) const {
    const int64_t lo = causal ? hd_max<int64_t>(0, j0 - (Tk - Tq)) : 0;
    const int64_t hi = banded() ? hd_min(Tq, j1 - 1 + window - (Tk - Tq) + 1) : Tq;
    return {lo, hd_max(hi, lo)};
  }

  // Tiles of `size` indices (tile t covers [t * size, (t + 1) * size)) overlapping the range:
  // [first tile, last tile + 1), empty for an empty range.
  static TEMPATTN_HD Range tiles_of(Range r, int64_t size) {
    if (r.empty()) return {0, 0};
    return {r.lo / size, (r.hi - 1) / size + 1};
  }
  // Key tiles of block_n keys that query tile t_m (rows [t_m * block_m, ...) clipped to Tq) visits.
  TEMPATTN_HD Range key_tiles(int64_t t_m, int64_t block_m, int64_t block_n) const {
    const int64_t i0 = t_m * block_m, i1 = hd_min(Tq, i0 + block_m);
    return tiles_of(keys_of_rows(i0, i1), block_n);
  }
  // Query tiles of block_m rows that see key tile t_n (keys [t_n * block_n, ...) clipped to Tk).
  TEMPATTN_HD Range query_tiles(int64_t t_n, int64_t block_n, int64_t block_m) const {
    const int64_t j0 = t_n * block_n, j1 = hd_min(Tk, j0 + block_n);
    return tiles_of(rows_of_keys(j0, j1), block_m);
  }
};

}  // namespace tempattn::common
