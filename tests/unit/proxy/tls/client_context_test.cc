#include "proxy/tls/client_context.h"

#include <gtest/gtest.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include <algorithm>
#include <fstream>

#include "tests/unit/proxy/tls/test_certs.h"

namespace culvert::tls {
namespace {

using testing::certPath;

// A TLS 1.2 server on mbedTLS over memory, driven by the test: the peer of the client
// transport without sockets, so every handshake outcome is deterministic.
class MemoryTlsServer {
public:
  struct Options {
    std::string cert = "server";
    bool require_client_cert = false;
    bool alpn = true;
  };

  explicit MemoryTlsServer(Options options) {
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_init(&rng_);
    mbedtls_x509_crt_init(&cert_);
    mbedtls_x509_crt_init(&ca_);
    mbedtls_pk_init(&key_);
    mbedtls_ssl_config_init(&conf_);
    mbedtls_ssl_init(&ssl_);
    EXPECT_EQ(mbedtls_ctr_drbg_seed(&rng_, mbedtls_entropy_func, &entropy_, nullptr, 0), 0);
    EXPECT_EQ(mbedtls_x509_crt_parse_file(&cert_, certPath(options.cert + ".crt").c_str()), 0);
    EXPECT_EQ(mbedtls_x509_crt_parse_file(&ca_, certPath("ca.crt").c_str()), 0);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    EXPECT_EQ(mbedtls_pk_parse_keyfile(&key_, certPath(options.cert + ".key").c_str(), nullptr,
                                       mbedtls_ctr_drbg_random, &rng_),
              0);
#else
    EXPECT_EQ(mbedtls_pk_parse_keyfile(&key_, certPath(options.cert + ".key").c_str(), nullptr), 0);
#endif
    EXPECT_EQ(mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT),
              0);
    mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, &rng_);
    EXPECT_EQ(mbedtls_ssl_conf_own_cert(&conf_, &cert_, &key_), 0);
    mbedtls_ssl_conf_ca_chain(&conf_, &ca_, nullptr);
    mbedtls_ssl_conf_authmode(&conf_, options.require_client_cert ? MBEDTLS_SSL_VERIFY_REQUIRED
                                                                  : MBEDTLS_SSL_VERIFY_NONE);
    if (options.alpn) {
      EXPECT_EQ(mbedtls_ssl_conf_alpn_protocols(&conf_, alpn_), 0);
    }
    EXPECT_EQ(mbedtls_ssl_setup(&ssl_, &conf_), 0);
    mbedtls_ssl_set_bio(&ssl_, this, &MemoryTlsServer::send, &MemoryTlsServer::recv, nullptr);
  }
  ~MemoryTlsServer() {
    mbedtls_ssl_free(&ssl_);
    mbedtls_ssl_config_free(&conf_);
    mbedtls_pk_free(&key_);
    mbedtls_x509_crt_free(&ca_);
    mbedtls_x509_crt_free(&cert_);
    mbedtls_ctr_drbg_free(&rng_);
    mbedtls_entropy_free(&entropy_);
  }

  // Feeds client bytes and advances; returns the mbedTLS status of the handshake.
  int step(const std::string& from_client) {
    in_ += from_client;
    if (handshake_rc_ == 0 && done_) return 0;
    handshake_rc_ = mbedtls_ssl_handshake(&ssl_);
    if (handshake_rc_ == 0) done_ = true;
    return handshake_rc_;
  }
  bool done() const { return done_; }
  std::string takeOutput() { return std::exchange(out_, {}); }
  std::string read() {
    std::string got;
    unsigned char buf[4096];
    int n;
    while ((n = mbedtls_ssl_read(&ssl_, buf, sizeof buf)) > 0) got.append(reinterpret_cast<char*>(buf), n);
    return got;
  }
  void write(std::string_view data) {
    while (!data.empty()) {
      int n = mbedtls_ssl_write(&ssl_, reinterpret_cast<const unsigned char*>(data.data()), data.size());
      ASSERT_GT(n, 0);
      data.remove_prefix(static_cast<size_t>(n));
    }
  }
  bool peerPresentedCertificate() const { return mbedtls_ssl_get_peer_cert(&ssl_) != nullptr; }

private:
  static int send(void* self, const unsigned char* data, size_t len) {
    static_cast<MemoryTlsServer*>(self)->out_.append(reinterpret_cast<const char*>(data), len);
    return static_cast<int>(len);
  }
  static int recv(void* ctx, unsigned char* data, size_t len) {
    auto* self = static_cast<MemoryTlsServer*>(ctx);
    if (self->in_.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = std::min(len, self->in_.size());
    std::copy_n(self->in_.data(), n, data);
    self->in_.erase(0, n);
    return static_cast<int>(n);
  }

  const char* alpn_[2] = {"h2", nullptr};
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context rng_;
  mbedtls_x509_crt cert_, ca_;
  mbedtls_pk_context key_;
  mbedtls_ssl_config conf_;
  mbedtls_ssl_context ssl_;
  std::string in_, out_;
  int handshake_rc_ = MBEDTLS_ERR_SSL_WANT_READ;
  bool done_ = false;
};

ClientConfig baseConfig() {
  ClientConfig c;
  c.ca_file = certPath("ca.crt");
  c.server_name = "xds.test";
  return c;
}

struct Outcome {
  common::Result<void> client = {};
  int server_rc = 0;
};

// Moves bytes both ways until the client is ready or either side fails.
Outcome handshake(Transport& client, MemoryTlsServer& server) {
  Outcome o;
  o.client = client.start();
  for (int i = 0; i < 20 && o.client && !client.ready(); ++i) {
    o.server_rc = server.step(client.takeOutput());
    if (o.server_rc != 0 && o.server_rc != MBEDTLS_ERR_SSL_WANT_READ && o.server_rc != MBEDTLS_ERR_SSL_WANT_WRITE) {
      // Let the client read the server's alert, if it sent one; else the server closes.
      std::string plain;
      o.client = client.onReceived(server.takeOutput(), plain);
      if (o.client) o.client = common::fail("closed by the server " + client.whyPeerClosed());
      break;
    }
    std::string plain;
    o.client = client.onReceived(server.takeOutput(), plain);
    EXPECT_TRUE(plain.empty());
  }
  if (o.client && client.ready()) o.server_rc = server.step(client.takeOutput());
  return o;
}

std::unique_ptr<Transport> newClient(const ClientConfig& config) {
  auto ctx = ClientContext::load(config);
  EXPECT_TRUE(ctx) << ctx.error().describe();
  if (!ctx) return nullptr;
  auto t = (*ctx)->newTransport();
  EXPECT_TRUE(t) << t.error().describe();
  return t ? std::move(*t) : nullptr;
}

std::string errorOf(const Outcome& o) { return o.client ? std::string("(no error)") : o.client.error().message; }

TEST(TlsClientTransportTest, HandshakeThenDataBothWays) {
  auto client = newClient(baseConfig());
  ASSERT_TRUE(client);
  MemoryTlsServer server({});
  auto o = handshake(*client, server);
  ASSERT_TRUE(o.client) << errorOf(o);
  ASSERT_TRUE(client->ready());
  ASSERT_TRUE(server.done()) << o.server_rc;
  EXPECT_NE(client->describe().find("TLSv1.2"), std::string::npos) << client->describe();

  ASSERT_TRUE(client->write("PRI * HTTP/2.0"));
  server.step(client->takeOutput());
  EXPECT_EQ(server.read(), "PRI * HTTP/2.0");
  server.write("settings");
  std::string plain;
  ASSERT_TRUE(client->onReceived(server.takeOutput(), plain));
  EXPECT_EQ(plain, "settings");
}

TEST(TlsClientTransportTest, RecordSplitAcrossReadsIsReassembled) {
  auto client = newClient(baseConfig());
  ASSERT_TRUE(client);
  MemoryTlsServer server({});
  ASSERT_TRUE(handshake(*client, server).client);
  server.write(std::string(40000, 'x'));
  std::string wire = server.takeOutput(), plain;
  for (size_t i = 0; i < wire.size(); i += 1000) ASSERT_TRUE(client->onReceived(wire.substr(i, 1000), plain));
  EXPECT_EQ(plain.size(), 40000u);
  EXPECT_TRUE(plain == std::string(40000, 'x'));
}

TEST(TlsClientTransportTest, ServerNameNotInCertificateFailsNamingTheCheck) {
  auto config = baseConfig();
  config.server_name = "elsewhere.test";
  auto client = newClient(config);
  ASSERT_TRUE(client);
  MemoryTlsServer server({});
  auto o = handshake(*client, server);
  ASSERT_FALSE(o.client);
  EXPECT_NE(errorOf(o).find("server certificate verification failed"), std::string::npos) << errorOf(o);
  EXPECT_NE(errorOf(o).find("server_name 'elsewhere.test' is not among its DNS names"), std::string::npos)
      << errorOf(o);
  EXPECT_FALSE(client->ready());
  EXPECT_FALSE(client->write("x"));
}

TEST(TlsClientTransportTest, UntrustedChainFails) {
  auto client = newClient(baseConfig());
  ASSERT_TRUE(client);
  MemoryTlsServer server({.cert = "rogue"});
  auto o = handshake(*client, server);
  ASSERT_FALSE(o.client);
  EXPECT_NE(errorOf(o).find("server certificate verification failed"), std::string::npos) << errorOf(o);
  EXPECT_NE(errorOf(o).find("trusted CA"), std::string::npos) << errorOf(o);
}

TEST(TlsClientTransportTest, IpAndUriSansCheckedAfterChainVerification) {
  for (std::string m : {"IP:127.0.0.1", "IP:::1", "URI:spiffe://culvert.test/ns/cp/sa/xds"}) {
    auto config = baseConfig();
    config.server_name.clear();  // the SAN matcher alone identifies the server
    config.san_matchers = {*parseSanMatcher(m)};
    auto client = newClient(config);
    ASSERT_TRUE(client);
    MemoryTlsServer server({});
    auto o = handshake(*client, server);
    EXPECT_TRUE(o.client) << m << ": " << errorOf(o);
  }
}

TEST(TlsClientTransportTest, CertificateWithoutTheExpectedSanIsRefused) {
  auto config = baseConfig();
  config.server_name.clear();
  config.san_matchers = {*parseSanMatcher("URI:spiffe://culvert.test/ns/cp/sa/xds"), *parseSanMatcher("IP:127.0.0.1")};
  auto client = newClient(config);
  ASSERT_TRUE(client);
  MemoryTlsServer server({.cert = "wrong"});
  auto o = handshake(*client, server);
  ASSERT_FALSE(o.client);
  EXPECT_EQ(errorOf(o),
            "server certificate subject alt names (DNS:other.test, IP:127.0.0.2, "
            "URI:spiffe://culvert.test/ns/cp/sa/other) match none of the expected "
            "(URI:spiffe://culvert.test/ns/cp/sa/xds, IP:127.0.0.1)");
  EXPECT_FALSE(client->ready());
}

TEST(TlsClientTransportTest, ServerWithoutAlpnH2IsRefused) {
  auto client = newClient(baseConfig());
  ASSERT_TRUE(client);
  MemoryTlsServer server({.alpn = false});
  auto o = handshake(*client, server);
  ASSERT_FALSE(o.client);
  EXPECT_EQ(errorOf(o), "the server did not select ALPN h2 (selected none)");
}

TEST(TlsClientTransportTest, ClientCertificateForMutualTls) {
  auto config = baseConfig();
  config.cert_file = certPath("client.crt");
  config.key_file = certPath("client.key");
  auto client = newClient(config);
  ASSERT_TRUE(client);
  MemoryTlsServer server({.require_client_cert = true});
  auto o = handshake(*client, server);
  ASSERT_TRUE(o.client) << errorOf(o);
  EXPECT_EQ(o.server_rc, 0);
  EXPECT_TRUE(server.peerPresentedCertificate());
}

TEST(TlsClientTransportTest, NoClientCertificateWhereOneIsRequired) {
  auto client = newClient(baseConfig());
  ASSERT_TRUE(client);
  MemoryTlsServer server({.require_client_cert = true});
  auto o = handshake(*client, server);
  ASSERT_FALSE(o.client);
  EXPECT_NE(o.server_rc, 0);
  EXPECT_FALSE(server.done());
  EXPECT_NE(errorOf(o).find("no client certificate was configured"), std::string::npos) << errorOf(o);
}

TEST(ClientContextTest, LoadErrorsNameTheFile) {
  auto config = baseConfig();
  config.ca_file = certPath("missing.crt");
  auto missing = ClientContext::load(config);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().where, certPath("missing.crt"));

  config = baseConfig();
  config.ca_file = certPath("server.key");  // a key is not a certificate
  auto not_cert = ClientContext::load(config);
  ASSERT_FALSE(not_cert);
  EXPECT_EQ(not_cert.error().where, certPath("server.key"));

  config = baseConfig();
  config.cert_file = certPath("client.crt");
  auto half = ClientContext::load(config);
  ASSERT_FALSE(half);
  EXPECT_NE(half.error().message.find("set both or neither"), std::string::npos);

  config.key_file = certPath("server.key");  // someone else's key
  auto mismatch = ClientContext::load(config);
  ASSERT_FALSE(mismatch);
  EXPECT_EQ(mismatch.error().where, certPath("server.key"));
  EXPECT_NE(mismatch.error().message.find("does not match"), std::string::npos);

  config = baseConfig();
  config.server_name.clear();
  EXPECT_FALSE(ClientContext::load(config));  // nothing identifies the server
}

TEST(PlaintextTransportTest, PassesBytesThrough) {
  auto t = makePlaintextTransport();
  ASSERT_TRUE(t->start());
  EXPECT_TRUE(t->ready());
  std::string plain;
  ASSERT_TRUE(t->onReceived("abc", plain));
  EXPECT_EQ(plain, "abc");
  ASSERT_TRUE(t->write("def"));
  EXPECT_EQ(t->takeOutput(), "def");
  EXPECT_EQ(t->takeOutput(), "");
}

// The build compiles this file twice, against mbedTLS 2.28 (Debian 12's) and 3.6: each
// binary must have compiled and run against the major it was built for.
TEST(MbedTlsVersionTest, HeadersAndLibraryAreTheExpectedMajor) {
  EXPECT_EQ(MBEDTLS_VERSION_MAJOR, CULVERT_EXPECT_MBEDTLS_MAJOR);
  EXPECT_EQ(mbedtls_version_get_number() >> 24, static_cast<unsigned>(CULVERT_EXPECT_MBEDTLS_MAJOR));
}

}  // namespace
}  // namespace culvert::tls
