#pragma once

// Asynchronous DNS resolution, behind an interface so the DNS cluster logic
// (dns_cluster.h) runs in tests on a scripted resolver. The real one is c-ares on a
// libuv loop (cares_dns_resolver.h).

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "proxy/common/socket_address.h"
#include "proxy/config/snapshot.h"

namespace culvert::upstream {

struct DnsResponse {
  struct Record {
    common::SocketAddress address;  // port 0
    std::chrono::seconds ttl{0};
  };
  // A name with no address of the asked families (NXDOMAIN, NODATA) is a success with no
  // records, as in Envoy; a failure is a resolver that could not answer (timeout,
  // SERVFAIL, REFUSED, unreachable).
  bool ok = false;
  std::string error;  // when !ok
  std::vector<Record> records;
};

// A query in flight; destroying it cancels it (its callback never runs).
class DnsQuery {
public:
  virtual ~DnsQuery() = default;
};

class DnsResolver {
public:
  using Callback = std::function<void(DnsResponse)>;
  virtual ~DnsResolver() = default;
  // Resolves `name` for `family` (Auto / V4Preferred fall back to the other family when
  // the preferred one has no address). The callback runs later, on the resolver's loop.
  virtual std::unique_ptr<DnsQuery> resolve(const std::string& name, config::DnsResolution::LookupFamily family,
                                            Callback callback) = 0;
};

}  // namespace culvert::upstream
