#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/common/recycled.h"
#include "proxy/http/header_map.h"

struct nghttp2_session;

namespace culvert::http::http2 {

// One side of an HTTP/2 connection over nghttp2, with no socket: bytes go in through
// receive() and come out of takeOutput(). Used for downstream (Server) and upstream
// (Client) connections alike.
//
// Flow control follows back-pressure: the codec never sends WINDOW_UPDATE on its own
// (NGHTTP2_OPT_NO_AUTO_WINDOW_UPDATE); the owner calls consume() once the other side has
// taken the bytes, so a slow reader holds the sender at the window, not in culvert.

enum class Mode { Server, Client };

struct Limits {
  uint32_t max_concurrent_streams = 100;
  uint32_t max_header_count = 100;
  uint32_t max_header_list_bytes = 60 * 1024;  // name + value + 32 per field (RFC 9113 §6.5.2)
  uint32_t initial_stream_window = 256 * 1024;
  uint32_t connection_window = 1024 * 1024;
};

// Why a received header block was refused; the stream is reset with PROTOCOL_ERROR.
enum class HeaderRejectReason {
  ConnectionSpecific,  // connection, keep-alive, proxy-connection, transfer-encoding, upgrade
  TeNotTrailers,
  TooManyHeaders,
  HeadersTooLarge,
  Malformed,  // anything else nghttp2's HTTP messaging rules refuse (pseudo-headers, ...)
};
inline constexpr size_t kHeaderRejectReasonCount = static_cast<size_t>(HeaderRejectReason::Malformed) + 1;
const char* toString(HeaderRejectReason reason);

// Whether an HTTP/2 message may not carry this header (RFC 9113 §8.2.2; "te" is allowed
// only as "trailers", which the caller checks). The HTTP/1 → HTTP/2 direction strips them.
bool isConnectionSpecificHeader(std::string_view lower_name);

class CodecCallbacks {
public:
  virtual ~CodecCallbacks() = default;
  // The message head: a request (Server) or a final response (Client; 1xx are skipped).
  // Pseudo-headers are in `headers` (":method", ":path", ":authority", ":status", ...).
  virtual void onHeaders(int32_t stream_id, HeaderMap&& headers, bool end_stream) = 0;
  // DATA payload; the owner calls consume() once it has passed it on.
  virtual void onData(int32_t stream_id, std::string_view data) = 0;
  // END_STREAM on a DATA frame.
  virtual void onEndStream(int32_t stream_id) = 0;
  // Trailers; they end the stream.
  virtual void onTrailers(int32_t stream_id, HeaderMap&& trailers) = 0;
  // The stream is gone: error_code 0 = both sides ended cleanly, else a reset (either way).
  virtual void onStreamClose(int32_t stream_id, uint32_t error_code) = 0;
  // Every DATA byte queued on the stream went into the output.
  virtual void onStreamDrained(int32_t) {}
  virtual void onGoaway(int32_t /*last_stream_id*/, uint32_t /*error_code*/) {}
  virtual void onHeaderRejected(int32_t /*stream_id*/, HeaderRejectReason) {}
};

class Codec {
public:
  Codec(Mode mode, const Limits& limits, CodecCallbacks& callbacks);
  ~Codec();
  Codec(const Codec&) = delete;
  Codec& operator=(const Codec&) = delete;

  // Feeds bytes from the socket. false: a connection error (GOAWAY is queued; write the
  // output and close). Callbacks run inside.
  bool receive(std::string_view data);
  // Appends what is ready to go on the wire to `out`.
  void takeOutput(std::string& out);
  bool hasOutput();

  // Client: opens a stream; returns its id, or a negative value when none can be opened.
  // The block's names must be lower case (HeaderMap's rule): nghttp2 sends them as they are.
  int32_t submitRequest(HeaderMap headers, bool end_stream);
  // Server: the response head of a stream. Names lower case, as for submitRequest.
  bool submitResponse(int32_t stream_id, HeaderMap headers, bool end_stream);
  // Queues body bytes on an open stream (sent as the peer's window allows).
  void sendData(int32_t stream_id, std::string_view data);
  // Ends this side of the stream after its queued DATA, with trailers when non-empty.
  void endStream(int32_t stream_id, const HeaderMap& trailers = {});
  void resetStream(int32_t stream_id, uint32_t error_code);
  // The owner passed `bytes` of the stream's DATA on: the peer may send that much more.
  void consume(int32_t stream_id, size_t bytes);
  // DATA queued on the stream, not yet in the output.
  size_t queuedBytes(int32_t stream_id) const;

  // Server: the first step of a graceful shutdown, a GOAWAY with last stream id 2^31-1
  // (RFC 9113 §6.8): the client stops opening streams, while streams already on their way
  // are still taken. goAway() later says which ones were.
  void shutdownNotice();
  // Graceful GOAWAY (last stream id = the last one seen) so the peer opens no more.
  void goAway(uint32_t error_code = 0);
  // The connection has nothing more to do (GOAWAY exchanged and streams done, or a
  // connection error): write the output and close.
  bool finished() const;
  // A connection error ended it: nothing graceful remains to be written.
  bool failed() const { return failed_; }
  // Streams this side may still open (Client).
  uint32_t peerMaxConcurrentStreams() const;
  size_t openStreams() const { return streams_.size(); }
  bool goawayReceived() const { return goaway_received_; }

private:
  struct Stream {
    HeaderMap pending;  // the header block being decoded
    uint32_t header_count = 0;
    uint32_t header_bytes = 0;
    bool head_seen = false;
    bool rejected = false;
    std::string out;  // DATA not yet taken by nghttp2
    bool out_ended = false;
    bool has_provider = false;
    HeaderMap trailers;
    size_t unconsumed = 0;
    // The HEADERS block submitted and not yet serialized: nghttp2 points into it
    // (NGHTTP2_NV_FLAG_NO_COPY_*) instead of copying and lower-casing every field.
    HeaderMap sending;
  };
  friend struct CodecCallbacksGlue;
  Stream* find(int32_t stream_id);
  void rejectHeader(int32_t stream_id, Stream& stream, HeaderRejectReason reason);

  Mode mode_;
  Limits limits_;
  CodecCallbacks& callbacks_;
  nghttp2_session* session_ = nullptr;
  common::RecyclingHashMap<int32_t, Stream> streams_;
  // find()'s last answer (0: none; stream ids are positive). Nodes do not move on rehash.
  int32_t last_found_id_ = 0;
  Stream* last_found_ = nullptr;
  size_t connection_credit_ = 0;  // DATA of closed streams, consumed at the next output
  HeaderRejectReason last_header_error_ = HeaderRejectReason::Malformed;
  bool goaway_received_ = false;
  bool failed_ = false;
};

}  // namespace culvert::http::http2
