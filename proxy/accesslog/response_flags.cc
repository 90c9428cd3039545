#include "proxy/accesslog/response_flags.h"

#include <array>

namespace culvert::accesslog {

namespace {

constexpr std::array<std::string_view, static_cast<size_t>(ResponseFlag::Count)> kCodes = {
    "LH", "UH", "UT",    "LR",   "UR", "UF", "UC", "UO", "NR",  "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR"};

}  // namespace

std::string_view shortCode(ResponseFlag f) { return kCodes[static_cast<size_t>(f)]; }

std::optional<ResponseFlag> parseShortCode(std::string_view code) {
  for (size_t i = 0; i < kCodes.size(); ++i) {
    if (kCodes[i] == code) return static_cast<ResponseFlag>(i);
  }
  return std::nullopt;
}

std::string ResponseFlags::toString() const {
  if (bits_ == 0) return "-";
  std::string out;
  for (size_t i = 0; i < kCodes.size(); ++i) {
    if (!has(static_cast<ResponseFlag>(i))) continue;
    if (!out.empty()) out += ',';
    out += kCodes[i];
  }
  return out;
}

}  // namespace culvert::accesslog
