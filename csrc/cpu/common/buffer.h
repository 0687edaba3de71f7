// Zero-initialised working memory taken from torch's CPU allocator rather than std::vector, so
// the kernels' own O(T) buffers show up in torch's memory profiler next to their outputs.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>
#include <cstdint>

namespace tempattn::cpu {

template <typename T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(int64_t n)
      : storage_(at::zeros({n}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value))),
        data_(storage_.data_ptr<T>()),
        size_(n) {}
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

}  // namespace tempattn::cpu
