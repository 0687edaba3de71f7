// The CPU block cache (see block_cache.h) and its two ops: tempattn_C::cpu_cache_info and
// tempattn_C::empty_cpu_cache.
#include "cpu/common/block_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cerrno>
#include <cstdlib>
#include <limits>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace tempattn::cpu {
namespace {

constexpr size_t kRoundBytes = size_t{2} << 20;
constexpr int64_t kDefaultCapacityMiB = 1024;

int64_t capacity_from_env() {
  const char* value = std::getenv("TEMPATTN_CPU_CACHE_MB");
  if (value == nullptr || *value == '\0') return kDefaultCapacityMiB << 20;
  char* end = nullptr;
  errno = 0;
  const long long mib = std::strtoll(value, &end, 10);
  TORCH_CHECK(end != value && *end == '\0' && mib >= 0,
              "TEMPATTN_CPU_CACHE_MB: expected a non-negative whole number of MiB, got '", value,
              "'; unset it for the default of ", kDefaultCapacityMiB, " or set 0 to turn the CPU block cache off");
  // A budget in bytes must fit int64: larger values would wrap to a negative budget (cache off).
  constexpr long long kMaxMiB = std::numeric_limits<int64_t>::max() >> 20;
  TORCH_CHECK(errno != ERANGE && mib <= kMaxMiB, "TEMPATTN_CPU_CACHE_MB: expected at most ", kMaxMiB,
              " MiB, got '", value, "'; the budget is a cap, so any value above the machine's memory works the same");
  return static_cast<int64_t>(mib) << 20;
}

class BlockCache final : public c10::Allocator {
 public:
  BlockCache() : capacity_(capacity_from_env()) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < kMinCachedBytes) return c10::GetDefaultCPUAllocator()->allocate(n);
    const size_t bytes = (n + kRoundBytes - 1) / kRoundBytes * kRoundBytes;
    void* ptr = take_cached(bytes);
    if (ptr == nullptr) ptr = c10::alloc_cpu(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    live_[ptr] = {bytes, n};
    allocated_ += n;
    c10::reportMemoryUsageToProfiler(ptr, static_cast<int64_t>(n), allocated_, allocated_ + cached_bytes_,
                                     c10::Device(c10::DeviceType::CPU));
    return {ptr, ptr, &BlockCache::release_block, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

  int64_t release_all() {
    std::vector<void*> to_free;
    int64_t released = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const Block& block : free_) to_free.push_back(block.ptr);
      released = static_cast<int64_t>(cached_bytes_);
      free_.clear();
      cached_bytes_ = 0;
    }
    for (void* ptr : to_free) c10::free_cpu(ptr);
    return released;
  }

  BlockCacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(cached_bytes_), capacity_, hits_, misses_};
  }

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };
  struct LiveBlock {
    size_t bytes, requested;
  };

  static void release_block(void* ptr);

  // The smallest cached block of bytes..2*bytes, removed from the cache; nullptr on a miss.
  void* take_cached(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->bytes >= bytes && it->bytes <= 2 * bytes && (best == free_.end() || it->bytes < best->bytes)) best = it;
    if (best == free_.end()) {
      ++misses_;
      return nullptr;
    }
    ++hits_;
    void* ptr = best->ptr;
    cached_bytes_ -= best->bytes;
    free_.erase(best);
    return ptr;
  }

  // Keeps a freed block, evicting the oldest ones past the budget (or frees it, when it alone is over).
  void give_back(void* ptr) {
    std::vector<void*> to_free;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto live = live_.find(ptr);
      TORCH_INTERNAL_ASSERT(live != live_.end(), "tempattn block cache: freeing a block it did not hand out");
      const LiveBlock block = live->second;
      live_.erase(live);
      allocated_ -= block.requested;
      if (static_cast<int64_t>(block.bytes) > capacity_) {
        to_free.push_back(ptr);
      } else {
        while (static_cast<int64_t>(cached_bytes_ + block.bytes) > capacity_) {
          to_free.push_back(free_.front().ptr);
          cached_bytes_ -= free_.front().bytes;
          free_.pop_front();
        }
        free_.push_back({ptr, block.bytes});
        cached_bytes_ += block.bytes;
      }
      c10::reportMemoryUsageToProfiler(ptr, -static_cast<int64_t>(block.requested), allocated_,
                                       allocated_ + cached_bytes_, c10::Device(c10::DeviceType::CPU));
    }
    for (void* p : to_free) c10::free_cpu(p);
  }

  std::mutex mutex_;
  const int64_t capacity_;
  std::list<Block> free_;  // oldest first
  std::unordered_map<void*, LiveBlock> live_;
  size_t cached_bytes_ = 0, allocated_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache();  // never destroyed: tensors may die after static destructors
  return *cache;
}

void BlockCache::release_block(void* ptr) { block_cache().give_back(ptr); }

std::vector<int64_t> cpu_cache_info() {
  const BlockCacheStats s = block_cache_stats();
  return {s.cached_bytes, s.capacity_bytes, s.hits, s.misses};
}

}  // namespace

c10::Allocator* block_cache_allocator() { return &block_cache(); }

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  return at::detail::empty_generic(sizes, block_cache_allocator(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), options.memory_format_opt());
}

int64_t release_cached_blocks() { return block_cache().release_all(); }

BlockCacheStats block_cache_stats() { return block_cache().stats(); }

}  // namespace tempattn::cpu

TORCH_LIBRARY_FRAGMENT(tempattn_C, m) {
  m.def("cpu_cache_info() -> int[]", &tempattn::cpu::cpu_cache_info);
  m.def("empty_cpu_cache() -> int", &tempattn::cpu::release_cached_blocks);
}
