// Large CPU blocks kept for reuse. A block of kMinCachedBytes or more (a 32 MiB output at T=16k,
// a backward's dQ partials) from the system allocator costs a page fault per 4 KiB page on every
// call: glibc maps allocations that large afresh and unmaps them on free. The kernels take their
// outputs and working buffers from this cache instead: a freed block waits, up to a byte budget
// (env TEMPATTN_CPU_CACHE_MB, default 1024; 0 turns the cache off), for the next request that fits
// it. Smaller requests go straight to c10's CPU allocator. Allocation and free are reported to
// torch's memory profiler like c10's allocator does, so a cached block counts as in use only
// while a tensor holds it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>

namespace tempattn::cpu {

constexpr size_t kMinCachedBytes = size_t{2} << 20;

struct BlockCacheStats {
  int64_t cached_bytes, capacity_bytes, hits, misses;
};

// The allocator behind cached_empty; its blocks outlive the extension's static destructors.
c10::Allocator* block_cache_allocator();

// at::empty(sizes, options) on the CPU, with the storage from the block cache.
at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

// Frees every cached block; returns the bytes released.
int64_t release_cached_blocks();

BlockCacheStats block_cache_stats();

}  // namespace tempattn::cpu
