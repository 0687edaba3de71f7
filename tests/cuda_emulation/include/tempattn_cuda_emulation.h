// A CPU emulator of the CUDA execution model, just large enough to run the kernels of csrc/cuda on
// the host (tests/cuda_emulation): each thread of a block is a fiber (ucontext) on one OS thread,
// run round-robin until it reaches a synchronisation point; blocks run one after another.
// Emulated: __syncthreads / __syncthreads_or / __syncwarp, warp shuffles and ballots (full warps),
// shared memory (`static` storage, reused by the next block), and mma.sync.m16n8k16 with fp32
// accumulation, whose fragments are gathered from the warp's 32 lanes through the layouts of
// common/mma_layout.h (checked against the PTX ISA by tests/cpu). What it cannot show: the real
// instruction's rounding order, the memory model of concurrent blocks, and speed.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

#include "common/mma_layout.h"

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline dim3 threadIdx, blockIdx;  // set by the scheduler before it resumes a fiber

using std::isfinite;

namespace tempattn::emu {

// A barrier for a set of fibers, with the OR of a value the arrivals bring (__syncthreads_or).
struct Barrier {
  int arrived = 0;
  unsigned generation = 0;
  unsigned or_acc = 0, or_result = 0;
};

constexpr int kWords = 6;  // per-lane exchange words: a shuffle uses 1, an mma's A and B fragments 6

struct Warp {
  Barrier barrier;
  int live = 0;
  uint32_t words[2][32][kWords];  // indexed by the barrier generation's parity (see exchange())
};

class Scheduler {
 public:
  static Scheduler& get() {
    static Scheduler s;
    return s;
  }

  // Runs body() as every thread of `grid` blocks of `threads` threads (1-D).
  void launch(unsigned grid, unsigned threads, const std::function<void()>& body) {
    if (threads == 0 || threads > 1024) throw std::invalid_argument("emulator: bad block size");
    contexts_.resize(threads);
    stacks_.resize(static_cast<size_t>(threads) * kStack);
    body_ = &body;
    for (unsigned b = 0; b < grid; ++b) run_block(b, threads);
  }

  void yield() { swapcontext(&contexts_[current_], &main_); }

  // Waits until every live participant of `bar` arrived (an exited fiber no longer counts).
  void wait(Barrier& bar, const int& live, unsigned value = 0) {
    const unsigned generation = bar.generation;
    bar.or_acc |= value;
    ++bar.arrived;
    while (bar.generation == generation) {
      if (bar.arrived >= live) {
        bar.arrived = 0;
        bar.or_result = bar.or_acc;
        bar.or_acc = 0;
        ++bar.generation;
        break;
      }
      waits_[current_] = {&bar, generation, &live};
      yield();
    }
    waits_[current_] = {};
  }

  int lane() const { return current_ & 31; }
  Warp& warp() { return warps_[current_ >> 5]; }
  Barrier& block_barrier() { return block_barrier_; }
  const int& block_live() const { return live_; }

 private:
  static constexpr size_t kStack = 256 * 1024;

  // A fiber blocked in wait(): resuming it is useless until its barrier completes or can complete.
  struct Wait {
    const Barrier* barrier = nullptr;
    unsigned generation = 0;
    const int* live = nullptr;
    bool blocked() const { return barrier != nullptr && barrier->generation == generation && barrier->arrived < *live; }
  };

  static void trampoline() {
    Scheduler& s = get();
    (*s.body_)();
    s.done_[s.current_] = true;
    --s.live_;
    --s.warp().live;
  }  // returns to main_ through uc_link

  void run_block(unsigned block, unsigned threads) {
    live_ = static_cast<int>(threads);
    block_barrier_ = Barrier{};
    done_.assign(threads, false);
    waits_.assign(threads, Wait{});
    warps_.assign((threads + 31) / 32, Warp{});
    for (unsigned t = 0; t < threads; ++t) {
      warps_[t >> 5].live += 1;
      getcontext(&contexts_[t]);
      contexts_[t].uc_stack.ss_sp = stacks_.data() + t * kStack;
      contexts_[t].uc_stack.ss_size = kStack;
      contexts_[t].uc_link = &main_;
      makecontext(&contexts_[t], trampoline, 0);
    }
    while (live_ > 0) {
      bool resumed = false;
      for (unsigned t = 0; t < threads; ++t) {
        if (done_[t] || waits_[t].blocked()) continue;
        resumed = true;
        current_ = static_cast<int>(t);
        threadIdx = dim3(t);
        blockIdx = dim3(block);
        swapcontext(&main_, &contexts_[t]);
      }
      if (!resumed) throw std::runtime_error("emulator: deadlock (a barrier no live thread can complete)");
    }
  }

  std::vector<ucontext_t> contexts_;
  std::vector<char> stacks_;
  std::vector<bool> done_;
  std::vector<Wait> waits_;
  std::vector<Warp> warps_;
  Barrier block_barrier_;
  ucontext_t main_;
  const std::function<void()>* body_ = nullptr;
  int current_ = 0, live_ = 0;
};

// Publishes this lane's words and returns the warp's (valid until this lane's next exchange: the
// buffer of a generation's parity is reused two generations later, after every lane has read it).
inline const uint32_t (*exchange(const uint32_t* mine, int n))[kWords] {
  Scheduler& s = Scheduler::get();
  Warp& w = s.warp();
  uint32_t(*buffer)[kWords] = w.words[w.barrier.generation & 1];
  std::memcpy(buffer[s.lane()], mine, n * sizeof(uint32_t));
  s.wait(w.barrier, w.live);
  return buffer;
}

inline void check_full_mask(unsigned mask) {
  if (mask != 0xFFFFFFFFu) throw std::runtime_error("emulator: only full-warp shuffles are emulated");
}

template <typename T>
T shuffle(T value, int src) {
  static_assert(sizeof(T) == 4, "32-bit shuffles");
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  const auto words = exchange(&bits, 1);
  std::memcpy(&value, &words[src & 31][0], 4);
  return value;
}

// d += a * b for one m16n8k16 tile: A and B rebuilt from the 32 lanes' fragments, fp32 accumulation
// of the exact products in k order. decode(bits16) gives an element's value.
template <typename Decode>
void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, Decode decode) {
  const uint32_t mine[kWords] = {a[0], a[1], a[2], a[3], b0, b1};
  const auto words = exchange(mine, kWords);
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    for (int e = 0; e < 8; ++e) {
      const common::FragCoord at = common::mma_a_coord(l, e);
      A[at.row][at.col] = decode(static_cast<uint16_t>(words[l][e / 2] >> (16 * (e % 2))));
    }
    for (int e = 0; e < 4; ++e) {
      const common::FragCoord at = common::mma_b_coord(l, e);
      B[at.row][at.col] = decode(static_cast<uint16_t>(words[l][4 + e / 2] >> (16 * (e % 2))));
    }
  }
  const int lane = Scheduler::get().lane();
  for (int e = 0; e < 4; ++e) {
    const common::FragCoord at = common::mma_c_coord(lane, e);
    float acc = d[e];
    for (int k = 0; k < 16; ++k) acc += A[at.row][k] * B[k][at.col];
    d[e] = acc;
  }
}

}  // namespace tempattn::emu

// ------------------------------------------------------------------ the CUDA names the kernels use
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

inline void __syncthreads() {
  auto& s = tempattn::emu::Scheduler::get();
  s.wait(s.block_barrier(), s.block_live());
}
inline int __syncthreads_or(int predicate) {
  auto& s = tempattn::emu::Scheduler::get();
  s.wait(s.block_barrier(), s.block_live(), predicate != 0);
  return static_cast<int>(s.block_barrier().or_result);
}
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu) {
  tempattn::emu::check_full_mask(mask);
  auto& s = tempattn::emu::Scheduler::get();
  s.wait(s.warp().barrier, s.warp().live);
}
template <typename T>
T __shfl_sync(unsigned mask, T value, int src) {
  tempattn::emu::check_full_mask(mask);
  return tempattn::emu::shuffle(value, src);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
  tempattn::emu::check_full_mask(mask);
  return tempattn::emu::shuffle(value, tempattn::emu::Scheduler::get().lane() ^ lane_mask);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  tempattn::emu::check_full_mask(mask);
  const uint32_t mine = predicate != 0;
  const auto words = tempattn::emu::exchange(&mine, 1);
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l) ballot |= (words[l][0] & 1u) << l;
  return ballot;
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }

// kernel<<<grid, threads, 0, stream>>>(args...) of the kernel headers (launch.h, TEMPATTN_LAUNCH).
#define TEMPATTN_LAUNCH(grid, threads, stream, args, ...) \
  ::tempattn::emu::Scheduler::get().launch((grid), (threads), [&] { __VA_ARGS__ args; })
