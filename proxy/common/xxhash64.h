#pragma once

#include <cstdint>
#include <string_view>

namespace culvert::common {

// XXH64 (Yann Collet's xxHash, 64-bit), the hash Envoy uses for ring hash, Maglev and
// hash policies. Implemented here rather than linked: it is small, and the Debian package
// ships no headers at run time. Known-answer tests pin it to the reference.
uint64_t xxHash64(std::string_view data, uint64_t seed = 0);

}  // namespace culvert::common
