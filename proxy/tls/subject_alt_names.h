#pragma once

// Subject alternative names of an X.509 certificate and culvert's own check of them.
// mbedTLS 2.28 verifies a peer's DNS names only (and keeps only DNS and otherName SANs in
// its parsed certificate), so IP and URI (SPIFFE) SANs are read here from the DER and
// matched after the chain has been verified. Pure functions: no TLS library involved.

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/common/error.h"

namespace culvert::tls {

enum class SanType { Dns, Ip, Uri };

std::string_view toString(SanType type);  // "DNS", "IP", "URI" (openssl's spelling)

// One SAN of a certificate; an IP is in its canonical text form (inet_ntop).
struct SubjectAltName {
  SanType type;
  std::string value;
  bool operator==(const SubjectAltName&) const = default;
};

// One accepted identity, written "DNS:name", "IP:address" or "URI:uri".
struct SanMatcher {
  SanType type;
  std::string value;  // DNS lower-cased; IP canonical; URI as given
  bool operator==(const SanMatcher&) const = default;
};

common::Result<SanMatcher> parseSanMatcher(std::string_view text);
std::string toString(const SanMatcher& matcher);

// The DNS, IP and URI SANs of a DER certificate, in certificate order (other kinds are
// skipped). A certificate without the extension has none; malformed DER is an error.
common::Result<std::vector<SubjectAltName>> subjectAltNamesFromDer(std::string_view der);

// True when some SAN satisfies some matcher: IP compares addresses, URI compares exactly
// (byte for byte, as SPIFFE IDs are), DNS compares case-insensitively and a certificate's
// "*.example.com" covers exactly one leftmost label.
bool matchesAny(std::span<const SubjectAltName> sans, std::span<const SanMatcher> matchers);

// "DNS:a, IP:10.0.0.1" for error messages; "none" when empty.
std::string describe(std::span<const SubjectAltName> sans);

}  // namespace culvert::tls
