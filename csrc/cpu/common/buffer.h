// Working memory taken from the block cache (block_cache.h) rather than std::vector, so the
// kernels' own O(T) buffers show up in torch's memory profiler next to their outputs, and large
// ones are reused across calls instead of faulted in afresh.
#pragma once
#include "cpu/common/capability.h"

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cstdint>

#include "cpu/common/block_cache.h"

namespace tempattn::cpu::CPU_CAPABILITY {

template <typename T>
class Buffer {
 public:
  Buffer() = default;
  // n zeros.
  explicit Buffer(int64_t n) : Buffer(uninitialized(n)) { std::fill(begin(), end(), T(0)); }
  // n values for the caller to write before reading.
  static Buffer uninitialized(int64_t n) {
    Buffer buffer;
    buffer.storage_ = cached_empty({n}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
    buffer.data_ = buffer.storage_.template mutable_data_ptr<T>();
    buffer.size_ = n;
    return buffer;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  T& operator[](int64_t i) { return data_[i]; }
  const T& operator[](int64_t i) const { return data_[i]; }

 private:
  at::Tensor storage_;
  T* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace tempattn::cpu::CPU_CAPABILITY
