#pragma once

// A Transport sits between a byte-stream socket and a protocol codec: plaintext passes
// through, TLS encrypts. It never touches a socket: the owner reads and writes through
// libuv and moves bytes in and out, so a handshake never blocks a loop.
//
//   socket bytes ──onReceived()──► plaintext for the codec
//   codec bytes  ──write()──► takeOutput() ──► socket
//
// An error names the failed step or check; the transport is unusable after one.

#include <memory>
#include <string>
#include <string_view>

#include "proxy/common/error.h"

namespace culvert::tls {

class Transport {
public:
  virtual ~Transport() = default;

  // Begins the handshake (queues the first flight in takeOutput()).
  virtual common::Result<void> start() = 0;
  // Bytes read from the socket; the plaintext they complete is appended to `plaintext`.
  virtual common::Result<void> onReceived(std::string_view bytes, std::string& plaintext) = 0;
  // Plaintext to send; only after ready().
  virtual common::Result<void> write(std::string_view plaintext) = 0;
  // Bytes to write to the socket, moved out.
  virtual std::string takeOutput() = 0;
  // The handshake is done and the peer passed every check: the codec may start.
  virtual bool ready() const = 0;
  // For logs: "plaintext", "TLS 1.2 TLS-ECDHE-...".
  virtual std::string describe() const = 0;
  // What the peer closing the connection now most likely means ("" when nothing more
  // than that it closed), e.g. a TLS server refusing a missing client certificate by
  // closing without an alert.
  virtual std::string whyPeerClosed() const = 0;
};

// Passes bytes through unchanged; ready at once.
std::unique_ptr<Transport> makePlaintextTransport();

}  // namespace culvert::tls
