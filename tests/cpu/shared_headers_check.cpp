// Exercises the host/device maths headers (csrc/common/*.h) as plain C++ (built and run by
// test_shared_headers.py with the system C++ compiler, no torch):
//   band       every tile-range rule of common::Band against a brute-force enumeration of
//              admissible (query, key) pairs over many geometries; prints "band ok <count>" or
//              the first mismatch and exits 1;
//   philox     prints the first Philox word of counter (j, i, h, b) for a small grid, which the
//              test compares with tempattn/ops/common/philox.py;
//   decay      prints m(Delta) and r_s for given parameters, compared with a float64 reference.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/band.h"
#include "common/mma_layout.h"
#include "common/philox.h"
#include "common/score_math.h"

using tempattn::common::Band;
using tempattn::common::Range;

namespace {

int fail(const char* what, const Band& g, int64_t a, int64_t b, Range got, Range want) {
  std::printf("band mismatch: %s Tq=%lld Tk=%lld causal=%d window=%lld args=(%lld, %lld) got [%lld, %lld) want [%lld, %lld)\n",
              what, (long long)g.Tq, (long long)g.Tk, (int)g.causal, (long long)g.window, (long long)a, (long long)b,
              (long long)got.lo, (long long)got.hi, (long long)want.lo, (long long)want.hi);
  return 1;
}

// Brute force: admissible by index (bottom-right alignment, causal, window), from the contract.
bool admissible(const Band& g, int64_t i, int64_t j) {
  const int64_t delta = i + g.Tk - g.Tq - j;
  if (g.causal && delta < 0) return false;
  if (g.causal && g.window >= 0 && delta > g.window) return false;
  return true;
}

bool same(Range a, Range b) { return (a.empty() && b.empty()) || (a.lo == b.lo && a.hi == b.hi); }

int check_band() {
  long long checked = 0;
  for (int64_t Tk = 1; Tk <= 13; ++Tk)
    for (int64_t Tq = 1; Tq <= 13; ++Tq)
      for (int causal = 0; causal < 2; ++causal)
        for (int64_t w = -1; w <= Tk + 2; ++w) {
          if (causal && Tq > Tk) continue;  // a ValueError in every operator
          if (!causal && w >= 0) continue;  // windows are causal only
          const Band g{Tq, Tk, causal == 1, tempattn::common::clamp_window(w, Tk)};
          for (int64_t i = 0; i < Tq; ++i)
            for (int64_t j = 0; j < Tk; ++j)
              if (g.admits(g.position(i), j) != admissible(g, i, j)) return fail("admits", g, i, j, {}, {});
          // keys_of_rows: the union of the rows' admissible keys is exactly [lo, hi).
          for (int64_t i0 = 0; i0 < Tq; ++i0)
            for (int64_t i1 = i0 + 1; i1 <= Tq; ++i1) {
              Range want{Tk, -1};
              for (int64_t i = i0; i < i1; ++i)
                for (int64_t j = 0; j < Tk; ++j)
                  if (admissible(g, i, j)) want = {std::min(want.lo, j), std::max(want.hi, j + 1)};
              for (int64_t j = want.lo; j < want.hi; ++j) {  // contiguous: no hole in the union
                bool seen = false;
                for (int64_t i = i0; i < i1; ++i) seen = seen || admissible(g, i, j);
                if (!seen) return fail("keys_of_rows hole", g, i0, i1, want, want);
              }
              if (!same(g.keys_of_rows(i0, i1), want)) return fail("keys_of_rows", g, i0, i1, g.keys_of_rows(i0, i1), want);
              ++checked;
            }
          // rows_of_keys: exactly the rows that see a key of [j0, j1) (contiguous too).
          for (int64_t j0 = 0; j0 < Tk; ++j0)
            for (int64_t j1 = j0 + 1; j1 <= Tk; ++j1) {
              Range want{Tq, -1};
              for (int64_t i = 0; i < Tq; ++i)
                for (int64_t j = j0; j < j1; ++j)
                  if (admissible(g, i, j)) want = {std::min(want.lo, i), std::max(want.hi, i + 1)};
              for (int64_t i = want.lo; i < want.hi; ++i) {
                bool seen = false;
                for (int64_t j = j0; j < j1; ++j) seen = seen || admissible(g, i, j);
                if (!seen) return fail("rows_of_keys hole", g, j0, j1, want, want);
              }
              if (!same(g.rows_of_keys(j0, j1), want)) return fail("rows_of_keys", g, j0, j1, g.rows_of_keys(j0, j1), want);
              ++checked;
            }
          // Tile skipping: a (query tile, key tile) pair holds an admissible pair iff each range lists the other.
          for (int64_t bm = 1; bm <= 5; ++bm)
            for (int64_t bn = 1; bn <= 5; ++bn)
              for (int64_t tm = 0; tm * bm < Tq; ++tm)
                for (int64_t tn = 0; tn * bn < Tk; ++tn) {
                  bool any = false;
                  for (int64_t i = tm * bm; i < std::min(Tq, (tm + 1) * bm); ++i)
                    for (int64_t j = tn * bn; j < std::min(Tk, (tn + 1) * bn); ++j) any = any || admissible(g, i, j);
                  const Range kt = g.key_tiles(tm, bm, bn), qt = g.query_tiles(tn, bn, bm);
                  const bool listed_k = kt.lo <= tn && tn < kt.hi, listed_q = qt.lo <= tm && tm < qt.hi;
                  if (any != listed_k) return fail("key_tiles", g, tm, tn, kt, {bm, bn});
                  if (any != listed_q) return fail("query_tiles", g, tn, tm, qt, {bm, bn});
                  ++checked;
                }
        }
  std::printf("band ok %lld\n", checked);
  return 0;
}

// philox B H Tq Tk seed: one line per (b, h, i, j) in that order, the first word in decimal.
int print_philox(int argc, char** argv) {
  if (argc != 7) return 2;
  const int64_t B = std::atoll(argv[2]), H = std::atoll(argv[3]), Tq = std::atoll(argv[4]), Tk = std::atoll(argv[5]);
  const uint64_t seed = std::strtoull(argv[6], nullptr, 10);
  const auto mask = tempattn::common::DropoutMask::make(0.5, static_cast<int64_t>(seed));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i)
        for (int64_t j = 0; j < Tk; ++j)
          std::printf("%u\n", tempattn::common::philox_first_word((uint32_t)j, (uint32_t)i, (uint32_t)h, (uint32_t)b,
                                                                 mask.key0, mask.key1));
  return 0;
}

// threshold p: common::dropout_threshold(p).
int print_threshold(int argc, char** argv) {
  if (argc != 3) return 2;
  std::printf("%u\n", tempattn::common::dropout_threshold(std::strtod(argv[2], nullptr)));
  return 0;
}

// decay eps S logit_0 .. logit_{S-1} log_gamma_0 .. log_gamma_{S-1} delta...: per delta one line
// "m r_0 .. r_{S-1}" in float64, from the alpha logits through log_softmax_row.
int print_decay(int argc, char** argv) {
  if (argc < 4) return 2;
  const double eps = std::strtod(argv[2], nullptr);
  const int64_t S = std::atoll(argv[3]);
  if (argc < 4 + 2 * S) return 2;
  std::vector<double> logits(S), log_gamma(S), log_a(S);
  for (int64_t s = 0; s < S; ++s) {
    logits[s] = std::strtod(argv[4 + s], nullptr);
    log_gamma[s] = std::strtod(argv[4 + S + s], nullptr);
  }
  tempattn::common::log_softmax_row(logits.data(), S, log_a.data());
  const tempattn::common::DecayHead<double> head{log_a.data(), log_gamma.data(), S,
                                                 tempattn::common::decay_log_eps<double>(eps)};
  for (int k = 4 + 2 * static_cast<int>(S); k < argc; ++k) {
    const double delta = tempattn::common::decay_offset(std::strtod(argv[k], nullptr));
    const double m = head.log_mix(delta);
    std::printf("%.17g", m);
    for (int64_t s = 0; s < S; ++s) std::printf(" %.17g", head.responsibility(s, delta, m));
    std::printf("\n");
  }
  return 0;
}

// rownorm lse row_max row_sum s: in float32, "coarse shift inv_sum P" of the backward's row rule (floats in %a).
int print_row_norm(int argc, char** argv) {
  if (argc != 6) return 2;
  float x[4];
  for (int k = 0; k < 4; ++k) x[k] = std::strtof(argv[2 + k], nullptr);
  const auto norm = tempattn::common::backward_row_norm(x[0], x[1], x[2]);
  std::printf("%d %a %a %a\n", tempattn::common::lse_is_coarse(x[0]) ? 1 : 0, norm.shift, norm.inv_sum,
              tempattn::common::probability(x[3], norm));
  return 0;
}

// mma: per fragment (a, b, c), lane and element, one line "frag lane e row col".
int print_mma_layout() {
  using namespace tempattn::common;
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < 8; ++e) std::printf("a %d %d %d %d\n", lane, e, mma_a_coord(lane, e).row, mma_a_coord(lane, e).col);
    for (int e = 0; e < 4; ++e) std::printf("b %d %d %d %d\n", lane, e, mma_b_coord(lane, e).row, mma_b_coord(lane, e).col);
    for (int e = 0; e < 4; ++e) std::printf("c %d %d %d %d\n", lane, e, mma_c_coord(lane, e).row, mma_c_coord(lane, e).col);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "band") == 0) return check_band();
  if (argc >= 2 && std::strcmp(argv[1], "philox") == 0) return print_philox(argc, argv);
  if (argc >= 2 && std::strcmp(argv[1], "threshold") == 0) return print_threshold(argc, argv);
  if (argc >= 2 && std::strcmp(argv[1], "decay") == 0) return print_decay(argc, argv);
  if (argc >= 2 && std::strcmp(argv[1], "rownorm") == 0) return print_row_norm(argc, argv);
  if (argc >= 2 && std::strcmp(argv[1], "mma") == 0) return print_mma_layout();
  std::fprintf(stderr,
               "usage: %s band | philox B H Tq Tk seed | threshold p | decay eps S logits.. log_gamma.. delta.. | "
               "rownorm lse max sum s | mma\n",
               argv[0]);
  return 2;
}
