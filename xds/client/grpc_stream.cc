#include "xds/client/grpc_stream.h"

#include <nghttp2/nghttp2.h>
#include <netdb.h>
#include <sys/un.h>
#include <uv.h>

#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "proxy/common/socket_address.h"

namespace culvert::xds::client {

common::Result<GrpcTarget> parseGrpcTarget(std::string_view address) {
  GrpcTarget t;
  if (address.starts_with("unix:")) {
    t.unix_path = std::string(address.substr(5));
    if (t.unix_path.empty()) return common::fail("unix: needs a path");
    if (t.unix_path.size() >= sizeof(sockaddr_un{}.sun_path)) return common::fail("unix socket path is too long");
    t.authority = "localhost";
    return t;
  }
  auto parsed = common::HostPort::parse(address);
  if (!parsed) return common::fail("expected host:port or unix:PATH: " + parsed.error().message);
  t.host_port = std::string(address);
  t.authority = std::string(address);
  return t;
}

namespace {

union StreamHandle {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
};

struct WriteReq {
  uv_write_t req;
  std::string data;
};

}  // namespace

struct GrpcStream::Impl {
  event::Dispatcher& dispatcher;
  GrpcTarget target;
  GrpcStreamOptions options;
  Callbacks callbacks;

  StreamHandle* handle = nullptr;
  std::unique_ptr<tls::Transport> transport;
  nghttp2_session* session = nullptr;
  int32_t stream_id = -1;
  bool closed = false;
  bool in_nghttp2 = false;
  std::optional<std::pair<int, std::string>> pending_close;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  std::string out_buf;  // framed gRPC messages not yet handed to nghttp2
  std::string in_buf;   // DATA bytes not yet forming a whole message
  std::vector<std::string> in_messages;
  int http_status = 0;
  std::optional<int> grpc_status;
  std::string grpc_message;
  bool stream_closed = false;
  uint32_t rst_code = 0;

  std::unique_ptr<event::Timer> connect_timer;
  std::unique_ptr<event::Timer> keepalive_timer;
  std::unique_ptr<event::Timer> keepalive_deadline;
  bool ping_outstanding = false;
  char read_buf[65536];

  Impl(event::Dispatcher& d, GrpcTarget t, GrpcStreamOptions o, Callbacks c)
      : dispatcher(d), target(std::move(t)), options(std::move(o)), callbacks(std::move(c)) {}

  ~Impl() {
    *alive = false;
    teardown();
  }

  void teardown() {
    connect_timer.reset();
    keepalive_timer.reset();
    keepalive_deadline.reset();
    if (session != nullptr) {
      nghttp2_session_del(session);
      session = nullptr;
    }
    if (handle != nullptr) {
      handle->handle.data = nullptr;
      uv_close(&handle->handle, [](uv_handle_t* h) { delete reinterpret_cast<StreamHandle*>(h); });
      handle = nullptr;
    }
  }

  // Only called from top-level libuv callbacks (never inside nghttp2): the owner may
  // destroy us from on_close, so nothing touches `this` afterwards.
  void fail(int status, std::string message) {
    if (closed) return;
    closed = true;
    teardown();
    auto cb = std::move(callbacks.on_close);
    if (cb) cb(status, std::move(message));
  }

  void deferClose(int status, std::string message) {
    if (!pending_close) pending_close.emplace(status, std::move(message));
  }

  void start() {
    handle = new StreamHandle{};
    int rc = 0;
    if (!target.unix_path.empty()) {
      uv_pipe_init(dispatcher.loop(), &handle->pipe, 0);
    } else {
      uv_tcp_init(dispatcher.loop(), &handle->tcp);
      uv_tcp_nodelay(&handle->tcp, 1);
    }
    handle->handle.data = this;
    auto* req = new uv_connect_t{};
    auto on_connect = [](uv_connect_t* r, int status) {
      auto* self = static_cast<Impl*>(r->handle->data);
      delete r;
      if (self == nullptr) return;
      self->onConnected(status);
    };
    if (!target.unix_path.empty()) {
      uv_pipe_connect(req, &handle->pipe, target.unix_path.c_str(), on_connect);
    } else {
      auto addr = common::SocketAddress::parseHostPort(target.host_port);
      if (addr) {
        rc = uv_tcp_connect(req, &handle->tcp, addr->sockaddr_ptr(), on_connect);
      } else {
        // A DNS name: resolved on libuv's thread pool, never blocking the main loop; the
        // connect timer covers resolution and connection together.
        rc = resolveThenConnect(req, on_connect);
      }
    }
    if (rc != 0) {
      delete req;
      // Report asynchronously: the owner is still inside start().
      auto guard = alive;
      dispatcher.post([this, guard, rc] {
        if (*guard) fail(kGrpcTransportFailure, std::string("connect: ") + uv_strerror(rc));
      });
      return;
    }
    connect_timer = dispatcher.createTimer([this] { fail(kGrpcTransportFailure, "connect timed out"); });
    connect_timer->enable(options.connect_timeout);
  }

  int resolveThenConnect(uv_connect_t* connect_req, uv_connect_cb on_connect) {
    auto host_port = common::HostPort::parse(target.host_port);
    if (!host_port) return UV_EINVAL;
    struct Resolve {
      uv_getaddrinfo_t req;
      Impl* self;
      std::shared_ptr<bool> guard;
      uv_connect_t* connect_req;
      uv_connect_cb on_connect;
    };
    auto* r = new Resolve{{}, this, alive, connect_req, on_connect};
    r->req.data = r;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    std::string port = std::to_string(host_port->port);
    int rc = uv_getaddrinfo(
        dispatcher.loop(), &r->req,
        [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
          std::unique_ptr<Resolve> r(static_cast<Resolve*>(req->data));
          if (!*r->guard || r->self->handle == nullptr) {
            delete r->connect_req;
            uv_freeaddrinfo(res);
            return;
          }
          int rc = status != 0 || res == nullptr ? (status != 0 ? status : UV_EAI_NONAME)
                                                 : uv_tcp_connect(r->connect_req, &r->self->handle->tcp, res->ai_addr,
                                                                  r->on_connect);
          uv_freeaddrinfo(res);
          if (rc != 0) {
            delete r->connect_req;
            r->self->fail(kGrpcTransportFailure, std::string("resolve ") + r->self->target.host_port + ": " + uv_strerror(rc));
          }
        },
        host_port->host.c_str(), port.c_str(), &hints);
    if (rc != 0) delete r;
    return rc;
  }

  void onConnected(int status) {
    if (status != 0) {
      connect_timer.reset();
      return fail(kGrpcTransportFailure, std::string("connect: ") + uv_strerror(status));
    }
    if (options.tls) {
      auto t = options.tls->newTransport();
      if (!t) return fail(kGrpcTransportFailure, "TLS: " + t.error().message);
      transport = std::move(*t);
    } else {
      transport = tls::makePlaintextTransport();
    }
    if (auto ok = transport->start(); !ok) return fail(kGrpcTransportFailure, "TLS: " + ok.error().message);
    uv_read_start(
        &handle->stream,
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* self = static_cast<Impl*>(h->data);
          *buf = uv_buf_init(self->read_buf, sizeof self->read_buf);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* self = static_cast<Impl*>(s->data);
          if (self == nullptr) return;
          self->onRead(n, buf);
        });
    writeToSocket(transport->takeOutput());
    if (transport->ready()) onTransportReady();
  }

  // The connection is usable (TCP up; TLS handshake done and the server checked).
  void onTransportReady() {
    connect_timer.reset();
    if (!startSession()) return fail(kGrpcTransportFailure, "cannot start the HTTP/2 session");
    keepalive_timer = dispatcher.createTimer([this] { onKeepalive(); });
    keepalive_timer->enable(options.keepalive_interval, options.keepalive_interval);
    auto guard = alive;
    if (callbacks.on_open) callbacks.on_open();
    if (!*guard) return;
    flushAndSettle();
  }

  bool startSession() {
    nghttp2_session_callbacks* cbs = nullptr;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(
        cbs, [](nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                const uint8_t* value, size_t valuelen, uint8_t, void* user) -> int {
          auto* self = static_cast<Impl*>(user);
          if (frame->hd.stream_id != self->stream_id) return 0;
          std::string_view n(reinterpret_cast<const char*>(name), namelen);
          std::string_view v(reinterpret_cast<const char*>(value), valuelen);
          if (n == ":status") {
            self->http_status = std::atoi(std::string(v).c_str());
          } else if (n == "grpc-status") {
            self->grpc_status = std::atoi(std::string(v).c_str());
          } else if (n == "grpc-message") {
            self->grpc_message = percentDecode(v);
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cbs, [](nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) -> int {
          auto* self = static_cast<Impl*>(user);
          if (id != self->stream_id) return 0;
          self->in_buf.append(reinterpret_cast<const char*>(data), len);
          self->parseMessages();
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(
        cbs, [](nghttp2_session*, int32_t id, uint32_t error_code, void* user) -> int {
          auto* self = static_cast<Impl*>(user);
          if (id != self->stream_id) return 0;
          self->stream_closed = true;
          self->rst_code = error_code;
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cbs, [](nghttp2_session*, const nghttp2_frame* frame, void* user) -> int {
          auto* self = static_cast<Impl*>(user);
          if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK)) {
            self->ping_outstanding = false;
          }
          return 0;
        });
    int rc = nghttp2_session_client_new(&session, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0) return false;

    constexpr int32_t kWindow = 1 << 24;
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                         {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kWindow}};
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, 2);
    nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, kWindow);

    std::string scheme = options.tls ? "https" : "http";
    auto nv = [](const std::string& n, const std::string& v) {
      return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                        reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                        NGHTTP2_NV_FLAG_NONE};
    };
    static const std::string kMethod = ":method", kPost = "POST", kScheme = ":scheme", kPath = ":path",
                             kAuthority = ":authority", kContentType = "content-type", kGrpc = "application/grpc",
                             kTe = "te", kTrailers = "trailers", kUserAgent = "user-agent",
                             kAgent = "culvert/" CULVERT_VERSION;
    nghttp2_nv headers[] = {nv(kMethod, kPost),
                            nv(kScheme, scheme),
                            nv(kPath, options.method_path),
                            nv(kAuthority, target.authority),
                            nv(kContentType, kGrpc),
                            nv(kTe, kTrailers),
                            nv(kUserAgent, kAgent)};
    nghttp2_data_provider provider{};
    provider.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t*,
                                nghttp2_data_source*, void* user) -> ssize_t {
      auto* self = static_cast<Impl*>(user);
      if (self->out_buf.empty()) return NGHTTP2_ERR_DEFERRED;
      size_t n = std::min(length, self->out_buf.size());
      std::memcpy(buf, self->out_buf.data(), n);
      self->out_buf.erase(0, n);
      return static_cast<ssize_t>(n);
    };
    stream_id = nghttp2_submit_request(session, nullptr, headers, std::size(headers), &provider, this);
    return stream_id > 0;
  }

  static std::string percentDecode(std::string_view v) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '%' && i + 2 < v.size()) {
        auto hex = std::string(v.substr(i + 1, 2));
        char* end = nullptr;
        long c = std::strtol(hex.c_str(), &end, 16);
        if (end == hex.c_str() + 2) {
          out.push_back(static_cast<char>(c));
          i += 2;
          continue;
        }
      }
      out.push_back(v[i]);
    }
    return out;
  }

  void parseMessages() {
    while (in_buf.size() >= 5) {
      auto b = reinterpret_cast<const uint8_t*>(in_buf.data());
      uint32_t len = (uint32_t{b[1]} << 24) | (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 8) | uint32_t{b[4]};
      if (b[0] != 0) {
        deferClose(kGrpcTransportFailure, "compressed gRPC message (culvert asks for none)");
        in_buf.clear();
        return;
      }
      if (len > options.max_message_bytes) {
        deferClose(kGrpcTransportFailure, "gRPC message of " + std::to_string(len) + " bytes exceeds the limit");
        in_buf.clear();
        return;
      }
      if (in_buf.size() < 5 + size_t{len}) return;
      in_messages.push_back(in_buf.substr(5, len));
      in_buf.erase(0, 5 + size_t{len});
    }
  }

  void onRead(ssize_t n, const uv_buf_t* buf) {
    if (n < 0) {
      if (n != UV_EOF) return fail(kGrpcTransportFailure, std::string("read: ") + uv_strerror(static_cast<int>(n)));
      std::string why = transport->whyPeerClosed();
      return fail(kGrpcTransportFailure, "connection closed by the control plane" + (why.empty() ? "" : " " + why));
    }
    if (n == 0) return;
    std::string plain;
    auto received = transport->onReceived(std::string_view(buf->base, static_cast<size_t>(n)), plain);
    writeToSocket(transport->takeOutput());  // handshake flights, alerts
    if (!received) return fail(kGrpcTransportFailure, "TLS: " + received.error().message);
    auto guard = alive;
    if (session == nullptr) {
      if (!transport->ready()) return;
      onTransportReady();
      if (!*guard || closed) return;
    }
    if (plain.empty()) return;
    in_nghttp2 = true;
    ssize_t rc = nghttp2_session_mem_recv(session, reinterpret_cast<const uint8_t*>(plain.data()), plain.size());
    in_nghttp2 = false;
    if (rc < 0) return fail(kGrpcTransportFailure, std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(rc)));
    auto messages = std::move(in_messages);
    in_messages.clear();
    for (auto& m : messages) {
      if (callbacks.on_message) callbacks.on_message(std::move(m));
      if (!*guard || closed) return;
    }
    flushAndSettle();
  }

  void onKeepalive() {
    if (ping_outstanding) return;
    ping_outstanding = true;
    nghttp2_submit_ping(session, NGHTTP2_FLAG_NONE, nullptr);
    if (!keepalive_deadline) {
      keepalive_deadline = dispatcher.createTimer([this] {
        if (ping_outstanding) fail(kGrpcTransportFailure, "keepalive: no PING ack from the control plane");
      });
    }
    keepalive_deadline->enable(options.keepalive_timeout);
    flushAndSettle();
  }

  // Hands queued bytes to the socket, then closes if the stream or session ended.
  void flushAndSettle() {
    if (closed || session == nullptr) return;
    flush();
    if (pending_close) {
      auto [status, message] = *pending_close;
      return fail(status, message);
    }
    if (stream_closed) {
      if (grpc_status) return fail(*grpc_status, grpc_message);
      if (http_status != 0 && http_status != 200) {
        return fail(kGrpcTransportFailure, "HTTP status " + std::to_string(http_status));
      }
      return fail(kGrpcTransportFailure,
                  std::string("stream closed without grpc-status (") + nghttp2_http2_strerror(rst_code) + ")");
    }
    if (!nghttp2_session_want_read(session) && !nghttp2_session_want_write(session)) {
      return fail(kGrpcTransportFailure, "HTTP/2 session ended (GOAWAY)");
    }
  }

  void flush() {
    if (in_nghttp2 || session == nullptr || handle == nullptr) return;
    std::string pending;
    for (;;) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session, &data);
      if (n < 0) {
        deferClose(kGrpcTransportFailure, std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(n)));
        return;
      }
      if (n == 0) break;
      pending.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    if (pending.empty()) return;
    if (auto ok = transport->write(pending); !ok) {
      deferClose(kGrpcTransportFailure, "TLS: " + ok.error().message);
      return;
    }
    writeToSocket(transport->takeOutput());
  }

  void writeToSocket(std::string bytes) {
    if (bytes.empty() || handle == nullptr) return;
    auto* w = new WriteReq{};
    w->data = std::move(bytes);
    uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    int rc = uv_write(&w->req, &handle->stream, &b, 1, [](uv_write_t* r, int status) {
      auto* req = reinterpret_cast<WriteReq*>(r);
      auto* self = static_cast<Impl*>(r->handle->data);
      delete req;
      if (self != nullptr && status < 0) self->fail(kGrpcTransportFailure, std::string("write: ") + uv_strerror(status));
    });
    if (rc != 0) {
      delete w;
      deferClose(kGrpcTransportFailure, std::string("write: ") + uv_strerror(rc));
    }
  }

  bool send(const std::string& message) {
    if (closed || session == nullptr) {
      if (!closed && session == nullptr) {
        // Not connected yet: queue; the request's data provider sends it once open.
        appendFrame(message);
        return true;
      }
      return false;
    }
    appendFrame(message);
    nghttp2_session_resume_data(session, stream_id);
    if (!in_nghttp2) flush();
    return true;
  }

  void appendFrame(const std::string& message) {
    uint32_t len = static_cast<uint32_t>(message.size());
    char header[5] = {0, static_cast<char>(len >> 24), static_cast<char>(len >> 16), static_cast<char>(len >> 8),
                      static_cast<char>(len)};
    out_buf.append(header, 5);
    out_buf.append(message);
  }
};

GrpcStream::GrpcStream(event::Dispatcher& dispatcher, GrpcTarget target, GrpcStreamOptions options,
                       Callbacks callbacks)
    : impl_(std::make_unique<Impl>(dispatcher, std::move(target), std::move(options), std::move(callbacks))) {}

GrpcStream::~GrpcStream() = default;

void GrpcStream::start() { impl_->start(); }

bool GrpcStream::send(const std::string& message) { return impl_->send(message); }

}  // namespace culvert::xds::client
