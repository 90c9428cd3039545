#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <unordered_map>
#include <vector>

namespace culvert::common {

// Memory for objects a worker makes and destroys in bursts, many thousand times a second.
// A freed block is kept in the thread's list of up to kKept blocks of its size, and the
// next allocation of that size takes it back from there.
//
// Why: glibc's malloc keeps only 7 freed blocks of a size per thread for quick reuse.
// Past that (128 concurrent HTTP/2 streams end together) blocks go to its bins, and a
// block over 1 KiB (a proxied HTTP/2 stream's state) is then served only after its fast
// bins are consolidated: ~850 instructions an allocation (docs/benchmarks.md, "Where the
// instructions go").
//
// Blocks are plain memory of one size: one freed on another thread joins that thread's
// list. What exceeds kKept, and the list when its thread exits, goes back to the heap.
// Under AddressSanitizer every block goes back at once, so a use after free is caught.
//
// kKept defaults to a burst as large as one busy HTTP/2 connection's streams (100 by
// default): at most that many blocks of a size stay with a thread after the burst.
inline constexpr size_t kRecycledPerThread = 128;

template <size_t kSize, size_t kKept = kRecycledPerThread>
class FreeBlocks {
public:
#if defined(__SANITIZE_ADDRESS__)
  static constexpr bool kRecycles = false;
#else
  static constexpr bool kRecycles = true;
#endif

  static void* allocate() {
    auto& kept = list().blocks;
    if (!kRecycles || kept.empty()) return ::operator new(kSize);
    void* block = kept.back();
    kept.pop_back();
    return block;
  }
  static void deallocate(void* block) noexcept {
    auto& kept = list().blocks;
    if (kRecycles && kept.size() < kKept) {
      kept.push_back(block);  // never reallocates: reserved at kKept
      return;
    }
    ::operator delete(block, kSize);
  }

private:
  struct List {
    List() { blocks.reserve(kKept); }
    ~List() {
      for (void* block : blocks) ::operator delete(block, kSize);
    }
    std::vector<void*> blocks;
  };
  static List& list() {
    thread_local List list;
    return list;
  }
};

// A class opts in by deriving from Recycled<Self>: `new` and `delete` of exactly Self go
// through FreeBlocks (a larger derived class uses the heap).
template <class T, size_t kKept = kRecycledPerThread>
class Recycled {
public:
  static void* operator new(size_t size) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
    return size == sizeof(T) ? FreeBlocks<sizeof(T), kKept>::allocate() : ::operator new(size);
  }
  static void operator delete(void* block, size_t size) noexcept {
    if (size == sizeof(T)) {
      FreeBlocks<sizeof(T), kKept>::deallocate(block);
    } else {
      ::operator delete(block, size);
    }
  }
};

// The same for a node-based container whose nodes come and go with requests (a per-stream
// std::unordered_map): single-node allocations go through FreeBlocks, arrays (a hash
// table's buckets) through the heap.
template <class T, size_t kKept = kRecycledPerThread>
class RecyclingAllocator {
public:
  using value_type = T;
  template <class U>
  struct rebind {
    using other = RecyclingAllocator<U, kKept>;
  };

  RecyclingAllocator() = default;
  template <class U>
  RecyclingAllocator(const RecyclingAllocator<U, kKept>&) noexcept {}  // NOLINT: rebinding converts implicitly

  T* allocate(size_t n) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
    if (n == 1) return static_cast<T*>(FreeBlocks<sizeof(T), kKept>::allocate());
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* block, size_t n) noexcept {
    if (n == 1) {
      FreeBlocks<sizeof(T), kKept>::deallocate(block);
    } else {
      std::allocator<T>().deallocate(block, n);
    }
  }

  template <class U>
  bool operator==(const RecyclingAllocator<U, kKept>&) const noexcept {
    return true;  // stateless: any instance frees what another allocated
  }
};

// A hash map of per-stream entries, its nodes recycled.
template <class Key, class Value, size_t kKept = kRecycledPerThread>
using RecyclingHashMap = std::unordered_map<Key, Value, std::hash<Key>, std::equal_to<Key>,
                                            RecyclingAllocator<std::pair<const Key, Value>, kKept>>;

}  // namespace culvert::common
