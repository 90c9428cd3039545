#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace culvert::accesslog {

// Envoy's response flags (%RESPONSE_FLAGS%), in Envoy's order: the order is what a flag
// list prints in. culvert sets the ones whose outcome it decides; the others exist so a
// response_flag_filter naming them is valid (and simply never matches).
enum class ResponseFlag : uint32_t {
  FailedLocalHealthCheck,           // LH
  NoHealthyUpstream,                // UH
  UpstreamRequestTimeout,           // UT
  LocalReset,                       // LR
  UpstreamRemoteReset,              // UR
  UpstreamConnectionFailure,        // UF
  UpstreamConnectionTermination,    // UC
  UpstreamOverflow,                 // UO
  NoRouteFound,                     // NR
  DelayInjected,                    // DI
  FaultInjected,                    // FI
  RateLimited,                      // RL
  UnauthorizedExternalService,      // UAEX
  RateLimitServiceError,            // RLSE
  DownstreamConnectionTermination,  // DC
  UpstreamRetryLimitExceeded,       // URX
  StreamIdleTimeout,                // SI
  InvalidEnvoyRequestHeaders,       // IH
  DownstreamProtocolError,          // DPE
  UpstreamMaxStreamDurationReached, // UMSDR
  ResponseFromCacheFilter,          // RFCF
  NoFilterConfigFound,              // NFCF
  DurationTimeout,                  // DT
  UpstreamProtocolError,            // UPE
  NoClusterFound,                   // NC
  OverloadManager,                  // OM: culvert's tenant budgets shed with it
  DnsResolutionFailed,              // DF
  DropOverLoad,                     // DO
  DownstreamRemoteReset,            // DR
  Count
};

// A set of flags.
class ResponseFlags {
public:
  void set(ResponseFlag f) { bits_ |= bit(f); }
  bool has(ResponseFlag f) const { return (bits_ & bit(f)) != 0; }
  bool any() const { return bits_ != 0; }
  bool intersects(ResponseFlags other) const { return (bits_ & other.bits_) != 0; }
  // "UF,URX"; "-" when none (Envoy's rendering).
  std::string toString() const;

private:
  static uint32_t bit(ResponseFlag f) { return uint32_t{1} << static_cast<uint32_t>(f); }
  uint32_t bits_ = 0;
};

std::string_view shortCode(ResponseFlag f);
// "UF" -> UpstreamConnectionFailure; nullopt for a code Envoy does not define.
std::optional<ResponseFlag> parseShortCode(std::string_view code);

}  // namespace culvert::accesslog
