#pragma once

// TLS client settings loaded once (CA chain, client certificate and key, RNG) and shared
// by every connection made with them; each connection gets its own Transport. mbedTLS
// stays inside client_context.cc, which compiles against 2.28 (Debian 12) and 3.6.

#include <memory>
#include <string>
#include <vector>

#include "proxy/common/error.h"
#include "proxy/tls/subject_alt_names.h"
#include "proxy/tls/transport.h"

namespace culvert::tls {

struct ClientConfig {
  std::string ca_file;    // PEM bundle the server's chain must verify against (required)
  std::string cert_file;  // PEM client certificate (chain) for mTLS; with key_file
  std::string key_file;
  // Sent as SNI and checked by mbedTLS against the server certificate's DNS SANs / CN.
  // Empty: no SNI and no name check by mbedTLS (san_matchers must then pin the peer).
  std::string server_name;
  // After chain verification, some SAN of the server's certificate must match one of
  // these (culvert's check: IP, URI, DNS). Empty: no extra check.
  std::vector<SanMatcher> san_matchers;
  std::vector<std::string> alpn = {"h2"};  // the server must select the first
};

class ClientContext : public std::enable_shared_from_this<ClientContext> {
public:
  // Reads and checks the files (PEM parses, key matches certificate). Errors name the file.
  static common::Result<std::shared_ptr<const ClientContext>> load(const ClientConfig& config);
  ~ClientContext();

  // A TLS 1.2 client Transport for one connection.
  common::Result<std::unique_ptr<Transport>> newTransport() const;
  const ClientConfig& config() const;

  struct Impl;

private:
  explicit ClientContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace culvert::tls
