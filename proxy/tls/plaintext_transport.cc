#include "proxy/tls/transport.h"

namespace culvert::tls {
namespace {

class PlaintextTransport final : public Transport {
public:
  common::Result<void> start() override { return {}; }
  common::Result<void> onReceived(std::string_view bytes, std::string& plaintext) override {
    plaintext.append(bytes);
    return {};
  }
  common::Result<void> write(std::string_view plaintext) override {
    out_.append(plaintext);
    return {};
  }
  std::string takeOutput() override { return std::exchange(out_, {}); }
  bool ready() const override { return true; }
  std::string describe() const override { return "plaintext"; }
  std::string whyPeerClosed() const override { return {}; }

private:
  std::string out_;
};

}  // namespace

std::unique_ptr<Transport> makePlaintextTransport() { return std::make_unique<PlaintextTransport>(); }

}  // namespace culvert::tls
