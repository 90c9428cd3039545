#include "proxy/tls/client_context.h"

#include <mbedtls/version.h>  // MBEDTLS_VERSION_NUMBER, in 2.28 and 3.x alike

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#include <psa/crypto.h>
#endif

#include <algorithm>
#include <array>
#include <filesystem>
#include <optional>
#include <utility>

namespace culvert::tls {

using common::fail;
using common::Result;

// Where mbedTLS 2.28 and 3.6 differ, and only there.
namespace compat {

// 3.x: the TLS stack's crypto runs on PSA, which must be initialised first (idempotent).
bool initCrypto() {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
  return psa_crypto_init() == PSA_SUCCESS;
#else
  return true;
#endif
}

int parseKeyFile(mbedtls_pk_context* key, const char* path, mbedtls_ctr_drbg_context* rng) {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
  return mbedtls_pk_parse_keyfile(key, path, nullptr, mbedtls_ctr_drbg_random, rng);
#else
  (void)rng;
  return mbedtls_pk_parse_keyfile(key, path, nullptr);
#endif
}

int checkPair(const mbedtls_pk_context* pub, const mbedtls_pk_context* prv, mbedtls_ctr_drbg_context* rng) {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
  return mbedtls_pk_check_pair(pub, prv, mbedtls_ctr_drbg_random, rng);
#else
  (void)rng;
  return mbedtls_pk_check_pair(pub, prv);
#endif
}

// TLS 1.2 exactly: the version 2.28 implements and the one this code was tested with.
void pinTls12(mbedtls_ssl_config* conf) {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
  mbedtls_ssl_conf_min_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
  mbedtls_ssl_conf_max_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
#else
  mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
#endif
}

}  // namespace compat

namespace {

std::string mbedtlsError(int rc) {
  std::array<char, 200> buf{};
  mbedtls_strerror(rc, buf.data(), buf.size());
  return buf.data();
}

// mbedtls_x509_crt_verify_info's lines as one "; "-separated sentence.
std::string verifyInfo(uint32_t flags) {
  std::array<char, 1024> buf{};
  mbedtls_x509_crt_verify_info(buf.data(), buf.size(), "", flags);
  std::string out;
  for (std::string_view rest = buf.data(); !rest.empty();) {
    auto nl = rest.find('\n');
    auto line = rest.substr(0, nl);
    if (!line.empty()) out += (out.empty() ? "" : "; ") + std::string(line);
    if (nl == std::string_view::npos) break;
    rest = rest.substr(nl + 1);
  }
  return out.empty() ? "unknown reason" : out;
}

Result<void> checkReadable(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return fail("does not exist or is not a file", path);
  return {};
}

}  // namespace

struct ClientContext::Impl {
  ClientConfig config;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context rng;
  mbedtls_x509_crt ca;
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  mbedtls_ssl_config conf;
  std::vector<const char*> alpn;  // NULL-terminated, pointing into config.alpn

  Impl() {
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&rng);
    mbedtls_x509_crt_init(&ca);
    mbedtls_x509_crt_init(&cert);
    mbedtls_pk_init(&key);
    mbedtls_ssl_config_init(&conf);
  }
  ~Impl() {
    mbedtls_ssl_config_free(&conf);
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&cert);
    mbedtls_x509_crt_free(&ca);
    mbedtls_ctr_drbg_free(&rng);
    mbedtls_entropy_free(&entropy);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
};

namespace {

// One TLS client session over memory: mbedTLS's BIO callbacks read from `in_` and append
// to `out_`, so the handshake and records advance only when the owner moves bytes.
class MbedTlsClientTransport final : public Transport {
public:
  MbedTlsClientTransport(std::shared_ptr<const ClientContext> context, const ClientContext::Impl& impl)
      : context_(std::move(context)), impl_(impl) {
    mbedtls_ssl_init(&ssl_);
  }
  ~MbedTlsClientTransport() override { mbedtls_ssl_free(&ssl_); }

  Result<void> setup() {
    if (int rc = mbedtls_ssl_setup(&ssl_, &impl_.conf); rc != 0) return fail("TLS setup: " + mbedtlsError(rc));
    // NULL explicitly disables the name check (3.6 refuses to verify without this call).
    const std::string& name = impl_.config.server_name;
    if (int rc = mbedtls_ssl_set_hostname(&ssl_, name.empty() ? nullptr : name.c_str()); rc != 0) {
      return fail("TLS server_name '" + name + "': " + mbedtlsError(rc));
    }
    mbedtls_ssl_set_bio(&ssl_, this, &MbedTlsClientTransport::bioSend, &MbedTlsClientTransport::bioRecv, nullptr);
    return {};
  }

  Result<void> start() override { return advanceHandshake(); }

  Result<void> onReceived(std::string_view bytes, std::string& plaintext) override {
    if (failed_) return fail(*failed_);
    in_.append(bytes);
    if (!handshake_done_) {
      if (auto ok = advanceHandshake(); !ok) return ok;
      if (!ready_) return {};
    }
    std::array<unsigned char, 16384> buf;
    for (;;) {
      int n = mbedtls_ssl_read(&ssl_, buf.data(), buf.size());
      if (n > 0) {
        plaintext.append(reinterpret_cast<const char*>(buf.data()), static_cast<size_t>(n));
        continue;
      }
      if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE) break;
      if (n == 0 || n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) return failWith("the peer closed the TLS session");
      return failWith("TLS read: " + mbedtlsError(n));
    }
    compactInput();
    return {};
  }

  Result<void> write(std::string_view plaintext) override {
    if (failed_) return fail(*failed_);
    if (!ready_) return fail("TLS write before the handshake finished");
    while (!plaintext.empty()) {
      int n = mbedtls_ssl_write(&ssl_, reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size());
      if (n < 0) return failWith("TLS write: " + mbedtlsError(n));
      plaintext.remove_prefix(static_cast<size_t>(n));
    }
    return {};
  }

  std::string takeOutput() override { return std::exchange(out_, {}); }
  bool ready() const override { return ready_; }

  std::string describe() const override {
    return std::string(mbedtls_ssl_get_version(&ssl_)) + " " + mbedtls_ssl_get_ciphersuite(&ssl_);
  }

  std::string whyPeerClosed() const override {
    if (ready_) return {};
    return std::string("during the TLS handshake") + clientCertificateHint();
  }

private:
  std::string clientCertificateHint() const {
    return impl_.config.cert_file.empty() ? " (no client certificate was configured; does the server require one?)"
                                          : " (was the client certificate refused?)";
  }

  static int bioSend(void* self, const unsigned char* data, size_t len) {
    static_cast<MbedTlsClientTransport*>(self)->out_.append(reinterpret_cast<const char*>(data), len);
    return static_cast<int>(len);
  }

  static int bioRecv(void* ctx, unsigned char* data, size_t len) {
    auto* self = static_cast<MbedTlsClientTransport*>(ctx);
    size_t available = self->in_.size() - self->in_pos_;
    if (available == 0) return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = std::min(len, available);
    std::copy_n(self->in_.data() + self->in_pos_, n, data);
    self->in_pos_ += n;
    return static_cast<int>(n);
  }

  void compactInput() {
    in_.erase(0, in_pos_);
    in_pos_ = 0;
  }

  std::unexpected<common::Error> failWith(std::string message) {
    failed_ = message;
    return fail(std::move(message));
  }

  Result<void> advanceHandshake() {
    int rc = mbedtls_ssl_handshake(&ssl_);
    compactInput();
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) return {};
    if (rc != 0) return failWith(explainHandshakeError(rc));
    handshake_done_ = true;
    if (auto ok = checkPeer(); !ok) return failWith(ok.error().message);
    ready_ = true;
    return {};
  }

  std::string explainHandshakeError(int rc) const {
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
      uint32_t flags = mbedtls_ssl_get_verify_result(&ssl_);
      std::string why = "server certificate verification failed: " + verifyInfo(flags);
      if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) {
        why += " (server_name '" + impl_.config.server_name + "' is not among its DNS names)";
      }
      return why;
    }
    if (rc == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
      return "the server aborted the TLS handshake with a fatal alert" + clientCertificateHint();
    }
    return "TLS handshake: " + mbedtlsError(rc);
  }

  // Runs after mbedTLS has verified the chain (and the DNS name, when server_name is set).
  Result<void> checkPeer() const {
    if (!impl_.config.alpn.empty()) {
      const char* selected = mbedtls_ssl_get_alpn_protocol(&ssl_);
      if (selected == nullptr ||
          std::find(impl_.config.alpn.begin(), impl_.config.alpn.end(), selected) == impl_.config.alpn.end()) {
        return fail("the server did not select ALPN " + impl_.config.alpn.front() + " (selected " +
                    (selected ? std::string("'") + selected + "'" : std::string("none")) + ")");
      }
    }
    if (impl_.config.san_matchers.empty()) return {};
    const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl_);
    if (peer == nullptr) return fail("the server sent no certificate");
    auto sans = subjectAltNamesFromDer(std::string_view(reinterpret_cast<const char*>(peer->raw.p), peer->raw.len));
    if (!sans) return fail("server certificate: " + sans.error().message);
    if (!matchesAny(*sans, impl_.config.san_matchers)) {
      std::string expected;
      for (const auto& m : impl_.config.san_matchers) expected += (expected.empty() ? "" : ", ") + toString(m);
      return fail("server certificate subject alt names (" + tls::describe(*sans) + ") match none of the expected (" +
                  expected + ")");
    }
    return {};
  }

  std::shared_ptr<const ClientContext> context_;  // keeps impl_ alive
  const ClientContext::Impl& impl_;
  mbedtls_ssl_context ssl_;
  std::string in_;
  size_t in_pos_ = 0;
  std::string out_;
  bool handshake_done_ = false;
  bool ready_ = false;
  std::optional<std::string> failed_;
};

}  // namespace

ClientContext::ClientContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClientContext::~ClientContext() = default;

const ClientConfig& ClientContext::config() const { return impl_->config; }

Result<std::shared_ptr<const ClientContext>> ClientContext::load(const ClientConfig& config) {
  if (config.ca_file.empty()) return fail("a CA file is required to verify the server");
  if (config.cert_file.empty() != config.key_file.empty()) {
    return fail("a client certificate and its key go together: set both or neither");
  }
  if (config.server_name.empty() && config.san_matchers.empty()) {
    return fail("nothing would identify the server: set a server name or subject alt names to match");
  }
  if (!compat::initCrypto()) return fail("cannot initialise PSA crypto");
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  static constexpr std::string_view kPersonalisation = "culvert-tls-client";
  if (int rc = mbedtls_ctr_drbg_seed(&impl->rng, mbedtls_entropy_func, &impl->entropy,
                                     reinterpret_cast<const unsigned char*>(kPersonalisation.data()),
                                     kPersonalisation.size());
      rc != 0) {
    return fail("cannot seed the random generator: " + mbedtlsError(rc));
  }

  if (auto ok = checkReadable(config.ca_file); !ok) return std::unexpected(ok.error());
  if (int rc = mbedtls_x509_crt_parse_file(&impl->ca, config.ca_file.c_str()); rc != 0) {
    return fail(rc < 0 ? "not a PEM/DER certificate bundle: " + mbedtlsError(rc)
                       : std::to_string(rc) + " certificate(s) in the bundle do not parse",
                config.ca_file);
  }
  if (!config.cert_file.empty()) {
    if (auto ok = checkReadable(config.cert_file); !ok) return std::unexpected(ok.error());
    if (auto ok = checkReadable(config.key_file); !ok) return std::unexpected(ok.error());
    if (int rc = mbedtls_x509_crt_parse_file(&impl->cert, config.cert_file.c_str()); rc != 0) {
      return fail("not a PEM/DER certificate: " + mbedtlsError(rc), config.cert_file);
    }
    if (int rc = compat::parseKeyFile(&impl->key, config.key_file.c_str(), &impl->rng); rc != 0) {
      return fail("not an unencrypted PEM/DER private key: " + mbedtlsError(rc), config.key_file);
    }
    if (int rc = compat::checkPair(&impl->cert.pk, &impl->key, &impl->rng); rc != 0) {
      return fail("the key does not match the certificate " + config.cert_file, config.key_file);
    }
  }

  mbedtls_ssl_config* conf = &impl->conf;
  if (int rc = mbedtls_ssl_config_defaults(conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                           MBEDTLS_SSL_PRESET_DEFAULT);
      rc != 0) {
    return fail("TLS defaults: " + mbedtlsError(rc));
  }
  compat::pinTls12(conf);
  mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_ca_chain(conf, &impl->ca, nullptr);
  mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, &impl->rng);
  if (!config.cert_file.empty()) {
    if (int rc = mbedtls_ssl_conf_own_cert(conf, &impl->cert, &impl->key); rc != 0) {
      return fail("client certificate: " + mbedtlsError(rc), config.cert_file);
    }
  }
  if (!impl->config.alpn.empty()) {
    for (const auto& p : impl->config.alpn) impl->alpn.push_back(p.c_str());
    impl->alpn.push_back(nullptr);
    if (int rc = mbedtls_ssl_conf_alpn_protocols(conf, impl->alpn.data()); rc != 0) {
      return fail("ALPN: " + mbedtlsError(rc));
    }
  }
  return std::shared_ptr<const ClientContext>(new ClientContext(std::move(impl)));
}

Result<std::unique_ptr<Transport>> ClientContext::newTransport() const {
  // Contexts only exist as shared_ptr (load()); the transport keeps this one alive.
  auto transport = std::make_unique<MbedTlsClientTransport>(shared_from_this(), *impl_);
  if (auto ok = transport->setup(); !ok) return std::unexpected(ok.error());
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace culvert::tls
