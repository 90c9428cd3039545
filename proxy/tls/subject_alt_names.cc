#include "proxy/tls/subject_alt_names.h"

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <optional>

#include "proxy/common/ascii.h"

namespace culvert::tls {

using common::fail;
using common::Result;

std::string_view toString(SanType type) {
  switch (type) {
    case SanType::Dns: return "DNS";
    case SanType::Ip: return "IP";
    case SanType::Uri: return "URI";
  }
  return "?";
}

namespace {

// Canonical text of an IPv4 or IPv6 literal; nullopt when it is neither.
std::optional<std::string> canonicalIp(std::string_view text) {
  std::string s(text);
  std::array<unsigned char, 16> bytes{};
  std::array<char, INET6_ADDRSTRLEN> out{};
  if (inet_pton(AF_INET, s.c_str(), bytes.data()) == 1) {
    return std::string(inet_ntop(AF_INET, bytes.data(), out.data(), out.size()));
  }
  if (inet_pton(AF_INET6, s.c_str(), bytes.data()) == 1) {
    return std::string(inet_ntop(AF_INET6, bytes.data(), out.data(), out.size()));
  }
  return std::nullopt;
}

// A DER reader over one TLV level: definite lengths only (DER has no other kind).
struct Tlv {
  uint8_t tag = 0;
  std::string_view value;
};

class DerReader {
public:
  explicit DerReader(std::string_view bytes) : rest_(bytes) {}
  bool done() const { return rest_.empty(); }

  Result<Tlv> next() {
    if (rest_.size() < 2) return fail("truncated DER");
    Tlv tlv;
    tlv.tag = static_cast<uint8_t>(rest_[0]);
    size_t len = static_cast<uint8_t>(rest_[1]);
    size_t header = 2;
    if (len & 0x80) {
      size_t octets = len & 0x7f;
      if (octets == 0 || octets > 4 || rest_.size() < 2 + octets) return fail("bad DER length");
      len = 0;
      for (size_t i = 0; i < octets; ++i) len = (len << 8) | static_cast<uint8_t>(rest_[2 + i]);
      header += octets;
    }
    if (rest_.size() - header < len) return fail("truncated DER");
    tlv.value = rest_.substr(header, len);
    rest_ = rest_.substr(header + len);
    return tlv;
  }

private:
  std::string_view rest_;
};

constexpr uint8_t kSequence = 0x30;
constexpr uint8_t kExtensionsTag = 0xa3;  // [3] EXPLICIT in TBSCertificate
constexpr uint8_t kOid = 0x06;
constexpr uint8_t kBoolean = 0x01;
constexpr uint8_t kOctetString = 0x04;
constexpr std::string_view kSubjectAltNameOid = "\x55\x1d\x11";  // 2.5.29.17
// GeneralName choices (context-specific, primitive).
constexpr uint8_t kDnsName = 0x82, kUri = 0x86, kIpAddress = 0x87;

Result<std::vector<SubjectAltName>> parseGeneralNames(std::string_view der) {
  DerReader outer(der);
  auto seq = outer.next();
  if (!seq || seq->tag != kSequence) return fail("subjectAltName is not a SEQUENCE");
  std::vector<SubjectAltName> out;
  DerReader names(seq->value);
  while (!names.done()) {
    auto name = names.next();
    if (!name) return std::unexpected(name.error());
    if (name->tag == kDnsName) {
      out.push_back({SanType::Dns, common::lowerAscii(name->value)});
    } else if (name->tag == kUri) {
      out.push_back({SanType::Uri, std::string(name->value)});
    } else if (name->tag == kIpAddress) {
      std::array<char, INET6_ADDRSTRLEN> text{};
      int family = name->value.size() == 4 ? AF_INET : name->value.size() == 16 ? AF_INET6 : 0;
      if (family == 0) return fail("iPAddress SAN of " + std::to_string(name->value.size()) + " bytes");
      out.push_back({SanType::Ip, inet_ntop(family, name->value.data(), text.data(), text.size())});
    }
  }
  return out;
}

// "*.example.com" in a certificate covers "a.example.com", not "example.com" or "a.b.example.com".
bool dnsMatches(std::string_view pattern, std::string_view name) {
  if (pattern == name) return true;
  if (!pattern.starts_with("*.")) return false;
  auto dot = name.find('.');
  return dot != std::string_view::npos && dot > 0 && name.substr(dot) == pattern.substr(1);
}

}  // namespace

Result<SanMatcher> parseSanMatcher(std::string_view text) {
  auto colon = text.find(':');
  std::string kind = common::lowerAscii(text.substr(0, colon));
  std::string_view value = colon == std::string_view::npos ? std::string_view() : text.substr(colon + 1);
  if (colon == std::string_view::npos || value.empty()) {
    return fail("'" + std::string(text) + "': expected DNS:name, IP:address or URI:uri");
  }
  if (kind == "dns") return SanMatcher{SanType::Dns, common::lowerAscii(value)};
  if (kind == "uri") return SanMatcher{SanType::Uri, std::string(value)};
  if (kind == "ip") {
    auto ip = canonicalIp(value);
    if (!ip) return fail("'" + std::string(value) + "' is not an IP address");
    return SanMatcher{SanType::Ip, *ip};
  }
  return fail("'" + std::string(text) + "': the kind must be DNS, IP or URI");
}

std::string toString(const SanMatcher& matcher) { return std::string(toString(matcher.type)) + ":" + matcher.value; }

Result<std::vector<SubjectAltName>> subjectAltNamesFromDer(std::string_view der) {
  // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { ... [3] extensions }, ... }
  DerReader top(der);
  auto cert = top.next();
  if (!cert || cert->tag != kSequence) return fail("not a DER certificate");
  DerReader cert_fields(cert->value);
  auto tbs = cert_fields.next();
  if (!tbs || tbs->tag != kSequence) return fail("certificate without a tbsCertificate");
  DerReader tbs_fields(tbs->value);
  while (!tbs_fields.done()) {
    auto field = tbs_fields.next();
    if (!field) return std::unexpected(field.error());
    if (field->tag != kExtensionsTag) continue;
    DerReader wrapper(field->value);
    auto extensions = wrapper.next();
    if (!extensions || extensions->tag != kSequence) return fail("extensions are not a SEQUENCE");
    DerReader list(extensions->value);
    while (!list.done()) {
      auto ext = list.next();
      if (!ext) return std::unexpected(ext.error());
      if (ext->tag != kSequence) return fail("an extension is not a SEQUENCE");
      DerReader parts(ext->value);
      auto oid = parts.next();
      if (!oid || oid->tag != kOid) return fail("an extension without an OID");
      if (oid->value != kSubjectAltNameOid) continue;
      auto value = parts.next();
      if (value && value->tag == kBoolean) value = parts.next();  // critical
      if (!value || value->tag != kOctetString) return fail("subjectAltName without a value");
      return parseGeneralNames(value->value);
    }
  }
  return std::vector<SubjectAltName>{};
}

bool matchesAny(std::span<const SubjectAltName> sans, std::span<const SanMatcher> matchers) {
  for (const auto& m : matchers) {
    for (const auto& san : sans) {
      if (san.type != m.type) continue;
      switch (m.type) {
        case SanType::Ip:
        case SanType::Uri:
          if (san.value == m.value) return true;
          break;
        case SanType::Dns:
          if (dnsMatches(san.value, m.value)) return true;
          break;
      }
    }
  }
  return false;
}

std::string describe(std::span<const SubjectAltName> sans) {
  if (sans.empty()) return "none";
  std::string out;
  for (const auto& san : sans) {
    if (!out.empty()) out += ", ";
    out += std::string(toString(san.type)) + ":" + san.value;
  }
  return out;
}

}  // namespace culvert::tls
