#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace culvert::common {

// Memory for objects a worker makes and destroys in bursts, many thousand times a second:
// a class opts in by deriving from Recycled<Self, kKept>. `delete` keeps the block in the
// thread's list of up to kKept freed ones, and `new` takes it back from there.
//
// Why: glibc's malloc keeps only 7 freed blocks of a size per thread for quick reuse.
// Past that (128 concurrent HTTP/2 streams end together) blocks go to its bins, and a
// block over 1 KiB (a proxied HTTP/2 stream's state) is then served only after its fast
// bins are consolidated: ~850 instructions an allocation (docs/benchmarks.md,
// "Instructions per request").
//
// Blocks are plain memory of sizeof(T): one freed on another thread joins that thread's
// list. What exceeds kKept, and the list when its thread exits, goes back to the heap.
// Under AddressSanitizer every block goes back at once, so a use after free is caught.
template <class T, size_t kKept>
class Recycled {
public:
  static void* operator new(size_t size) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
    auto& kept = freeList().blocks;
    if (kRecycle && size == sizeof(T) && !kept.empty()) {
      void* block = kept.back();
      kept.pop_back();
      return block;
    }
    return ::operator new(size);
  }
  static void operator delete(void* block, size_t size) noexcept {
    auto& kept = freeList().blocks;
    if (kRecycle && size == sizeof(T) && kept.size() < kKept) {
      kept.push_back(block);  // never reallocates: reserved at kKept
      return;
    }
    ::operator delete(block, size);
  }

private:
#if defined(__SANITIZE_ADDRESS__)
  static constexpr bool kRecycle = false;
#else
  static constexpr bool kRecycle = true;
#endif

  struct FreeList {
    FreeList() { blocks.reserve(kKept); }
    ~FreeList() {
      for (void* block : blocks) ::operator delete(block, sizeof(T));
    }
    std::vector<void*> blocks;
  };
  static FreeList& freeList() {
    thread_local FreeList list;
    return list;
  }
};

}  // namespace culvert::common
