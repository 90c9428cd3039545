#include "proxy/http/http2/codec.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace culvert::http::http2 {

const char* toString(HeaderRejectReason reason) {
  switch (reason) {
    case HeaderRejectReason::ConnectionSpecific: return "connection_specific_header";
    case HeaderRejectReason::TeNotTrailers: return "te_not_trailers";
    case HeaderRejectReason::TooManyHeaders: return "too_many_headers";
    case HeaderRejectReason::HeadersTooLarge: return "headers_too_large";
    case HeaderRejectReason::Malformed: return "malformed";
  }
  return "malformed";
}

bool isConnectionSpecificHeader(std::string_view name) {
  return name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
         name == "transfer-encoding" || name == "upgrade";
}

namespace {

// Pseudo-headers included: a request from curl or a browser has 7 to 12.
constexpr size_t kTypicalHeaderCount = 12;

// The name/value pairs nghttp2 takes, pointing into `headers`. One array per thread serves
// every call: nghttp2 copies the array at submit. `flags` says whether it copies the
// fields too.
const std::vector<nghttp2_nv>& toNv(const HeaderMap& headers, uint8_t flags) {
  thread_local std::vector<nghttp2_nv> nv;
  nv.clear();
  for (const auto& [name, value] : headers.entries()) {
    nv.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                  reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(), flags});
  }
  return nv;
}

// A HEADERS block the stream keeps until it is serialized (Codec::Stream::sending).
constexpr uint8_t kBorrowed = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;

// nghttp2 refuses connection-specific headers itself (its HTTP messaging rules) before
// any header callback sees them; its error message is the only place naming the header.
HeaderRejectReason classifyHeaderError(std::string_view message) {
  auto at = message.find("name: [");
  if (at == std::string_view::npos) return HeaderRejectReason::Malformed;
  auto name = message.substr(at + 7);
  name = name.substr(0, name.find(']'));
  if (name == "te") return HeaderRejectReason::TeNotTrailers;
  if (isConnectionSpecificHeader(name)) return HeaderRejectReason::ConnectionSpecific;
  return HeaderRejectReason::Malformed;
}

}  // namespace

// nghttp2's C callbacks, forwarding to the Codec.
struct CodecCallbacksGlue {
  static Codec& self(void* user) { return *static_cast<Codec*>(user); }

  static int onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto& c = self(user);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    // A server learns of a new stream here; a client made its entry at submit.
    auto& s = c.streams_[frame->hd.stream_id];
    s.pending = HeaderMap{};
    s.pending.reserve(kTypicalHeaderCount);  // a typical block at once, not 1, 2, 4, 8
    s.header_count = 0;
    s.header_bytes = 0;
    return 0;
  }

  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    auto& c = self(user);
    auto* s = c.find(frame->hd.stream_id);
    if (s == nullptr || s->rejected) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->header_bytes += static_cast<uint32_t>(namelen + valuelen + 32);
    if (++s->header_count > c.limits_.max_header_count) {
      c.rejectHeader(frame->hd.stream_id, *s, HeaderRejectReason::TooManyHeaders);
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (s->header_bytes > c.limits_.max_header_list_bytes) {
      c.rejectHeader(frame->hd.stream_id, *s, HeaderRejectReason::HeadersTooLarge);
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    s->pending.add(std::string(reinterpret_cast<const char*>(name), namelen),
                   std::string(reinterpret_cast<const char*>(value), valuelen));
    return 0;
  }

  static int onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto& c = self(user);
    int32_t id = frame->hd.stream_id;
    bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS: {
        auto* s = c.find(id);
        if (s == nullptr || s->rejected) return 0;
        if (!s->head_seen) {
          auto status = s->pending.get(":status");
          if (c.mode_ == Mode::Client && status && status->starts_with('1')) {
            s->pending = HeaderMap{};  // 1xx: the final response follows
            return 0;
          }
          s->head_seen = true;
          c.callbacks_.onHeaders(id, std::move(s->pending), end_stream);
        } else {
          c.callbacks_.onTrailers(id, std::move(s->pending));
        }
        break;
      }
      case NGHTTP2_DATA:
        if (end_stream && c.find(id) != nullptr) c.callbacks_.onEndStream(id);
        break;
      case NGHTTP2_GOAWAY:
        c.goaway_received_ = true;
        c.callbacks_.onGoaway(frame->goaway.last_stream_id, frame->goaway.error_code);
        break;
      default:
        break;
    }
    return 0;
  }

  static int onDataChunk(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
    auto& c = self(user);
    auto* s = c.find(id);
    if (s == nullptr || s->rejected) {
      c.connection_credit_ += len;  // nobody will consume it
      return 0;
    }
    s->unconsumed += len;
    c.callbacks_.onData(id, std::string_view(reinterpret_cast<const char*>(data), len));
    return 0;
  }

  static int onStreamClose(nghttp2_session*, int32_t id, uint32_t error_code, void* user) {
    auto& c = self(user);
    auto it = c.streams_.find(id);
    if (it == c.streams_.end()) return 0;
    // Bytes received but never consumed still count against the connection's window.
    c.connection_credit_ += it->second.unconsumed;
    if (id == c.last_found_id_) c.last_found_id_ = 0;
    c.streams_.erase(it);
    c.callbacks_.onStreamClose(id, error_code);
    return 0;
  }

  static int onFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto& c = self(user);
    if (frame->hd.type == NGHTTP2_HEADERS) {
      // Serialized: nghttp2 no longer reads the block's fields.
      if (auto* s = c.find(frame->hd.stream_id)) s->sending = HeaderMap();
      return 0;
    }
    if (frame->hd.type != NGHTTP2_DATA) return 0;
    auto* s = c.find(frame->hd.stream_id);
    if (s != nullptr && s->out.empty()) c.callbacks_.onStreamDrained(frame->hd.stream_id);
    return 0;
  }

  static int onError(nghttp2_session*, int lib_error_code, const char* msg, size_t len, void* user) {
    auto& c = self(user);
    if (lib_error_code == NGHTTP2_ERR_HTTP_HEADER) {
      c.last_header_error_ = classifyHeaderError(std::string_view(msg, len));
    }
    return 0;
  }

  static int onInvalidFrame(nghttp2_session*, const nghttp2_frame* frame, int lib_error_code, void* user) {
    auto& c = self(user);
    if (frame->hd.type != NGHTTP2_HEADERS ||
        (lib_error_code != NGHTTP2_ERR_HTTP_HEADER && lib_error_code != NGHTTP2_ERR_HTTP_MESSAGING)) {
      return 0;
    }
    auto reason = lib_error_code == NGHTTP2_ERR_HTTP_HEADER ? c.last_header_error_ : HeaderRejectReason::Malformed;
    c.last_header_error_ = HeaderRejectReason::Malformed;
    if (auto* s = c.find(frame->hd.stream_id); s != nullptr) {
      if (s->rejected) return 0;
      s->rejected = true;
    }
    c.callbacks_.onHeaderRejected(frame->hd.stream_id, reason);
    return 0;
  }

  static ssize_t readData(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source*, void* user) {
    auto& c = self(user);
    auto* s = c.find(id);
    if (s == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (s->out.empty()) {
      if (!s->out_ended) return NGHTTP2_ERR_DEFERRED;
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (s->trailers.size() > 0) {
        const auto& nv = toNv(s->trailers, NGHTTP2_NV_FLAG_NONE);
        if (nghttp2_submit_trailer(session, id, nv.data(), nv.size()) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      }
      return 0;
    }
    size_t n = std::min(length, s->out.size());
    std::memcpy(buf, s->out.data(), n);
    s->out.erase(0, n);
    return static_cast<ssize_t>(n);
  }
};

Codec::Codec(Mode mode, const Limits& limits, CodecCallbacks& callbacks)
    : mode_(mode), limits_(limits), callbacks_(callbacks) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &CodecCallbacksGlue::onBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &CodecCallbacksGlue::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &CodecCallbacksGlue::onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &CodecCallbacksGlue::onDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &CodecCallbacksGlue::onStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &CodecCallbacksGlue::onFrameSend);
  nghttp2_session_callbacks_set_error_callback2(cbs, &CodecCallbacksGlue::onError);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, &CodecCallbacksGlue::onInvalidFrame);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // Before the peer's SETTINGS arrive, assume what RFC 9113 recommends at least.
  nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
  nghttp2_option_set_max_send_header_block_length(opt, 256 * 1024);
  if (mode_ == Mode::Server) {
    nghttp2_session_server_new2(&session_, cbs, this, opt);
  } else {
    nghttp2_session_client_new2(&session_, cbs, this, opt);
  }
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);

  std::vector<nghttp2_settings_entry> settings = {
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits_.initial_stream_window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits_.max_header_list_bytes},
  };
  if (mode_ == Mode::Server) {
    settings.push_back({NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_concurrent_streams});
  } else {
    settings.push_back({NGHTTP2_SETTINGS_ENABLE_PUSH, 0});
  }
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<int32_t>(limits_.connection_window));
}

Codec::~Codec() { nghttp2_session_del(session_); }

Codec::Stream* Codec::find(int32_t stream_id) {
  // A header block's fields arrive in a row, each asking for the same stream.
  if (stream_id == last_found_id_) return last_found_;
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return nullptr;
  last_found_id_ = stream_id;
  last_found_ = &it->second;
  return last_found_;
}

void Codec::rejectHeader(int32_t stream_id, Stream& stream, HeaderRejectReason reason) {
  stream.rejected = true;
  callbacks_.onHeaderRejected(stream_id, reason);
}

bool Codec::receive(std::string_view data) {
  if (failed_) return false;
  ssize_t rc = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(data.data()), data.size());
  if (rc < 0) {
    failed_ = true;
    return false;
  }
  return true;
}

void Codec::takeOutput(std::string& out) {
  if (connection_credit_ > 0) {
    nghttp2_session_consume_connection(session_, connection_credit_);
    connection_credit_ = 0;
  }
  for (;;) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n <= 0) {
      if (n < 0) failed_ = true;
      return;
    }
    out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
}

bool Codec::hasOutput() { return connection_credit_ > 0 || nghttp2_session_want_write(session_) != 0; }

int32_t Codec::submitRequest(HeaderMap headers, bool end_stream) {
  const auto& nv = toNv(headers, kBorrowed);
  nghttp2_data_provider provider{};
  provider.read_callback = &CodecCallbacksGlue::readData;
  int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), end_stream ? nullptr : &provider,
                                      nullptr);
  if (id > 0) {
    auto& s = streams_[id];
    s.has_provider = !end_stream;
    // The stream id exists only now. Moving the block moves its entries' storage as a
    // whole, so the fields nghttp2 points at stay where they are.
    s.sending = std::move(headers);
  }
  return id;
}

bool Codec::submitResponse(int32_t stream_id, HeaderMap headers, bool end_stream) {
  auto* s = find(stream_id);
  if (s == nullptr) return false;
  // A block still waiting to be serialized must stay put: a second one is copied.
  bool borrow = s->sending.size() == 0;
  if (borrow) s->sending = std::move(headers);
  const auto& nv = borrow ? toNv(s->sending, kBorrowed) : toNv(headers, NGHTTP2_NV_FLAG_NONE);
  nghttp2_data_provider provider{};
  provider.read_callback = &CodecCallbacksGlue::readData;
  s->has_provider = !end_stream;
  return nghttp2_submit_response(session_, stream_id, nv.data(), nv.size(), end_stream ? nullptr : &provider) == 0;
}

void Codec::sendData(int32_t stream_id, std::string_view data) {
  auto* s = find(stream_id);
  if (s == nullptr || s->out_ended || data.empty()) return;
  s->out.append(data);
  if (s->has_provider) nghttp2_session_resume_data(session_, stream_id);
}

void Codec::endStream(int32_t stream_id, const HeaderMap& trailers) {
  auto* s = find(stream_id);
  if (s == nullptr || s->out_ended || !s->has_provider) return;
  s->out_ended = true;
  s->trailers = trailers;
  nghttp2_session_resume_data(session_, stream_id);
}

void Codec::resetStream(int32_t stream_id, uint32_t error_code) {
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
}

void Codec::consume(int32_t stream_id, size_t bytes) {
  auto* s = find(stream_id);
  if (s == nullptr) return;  // closed: its bytes were credited to the connection then
  bytes = std::min(bytes, s->unconsumed);
  if (bytes == 0) return;
  s->unconsumed -= bytes;
  nghttp2_session_consume(session_, stream_id, bytes);
}

size_t Codec::queuedBytes(int32_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? 0 : it->second.out.size();
}

void Codec::shutdownNotice() { nghttp2_submit_shutdown_notice(session_); }

void Codec::goAway(uint32_t error_code) {
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_), error_code,
                        nullptr, 0);
}

bool Codec::finished() const {
  return failed_ || (nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0);
}

uint32_t Codec::peerMaxConcurrentStreams() const {
  return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

}  // namespace culvert::http::http2
