#include "agent/admin/admin_server.h"

#include <llhttp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <vector>

namespace culvert::agent {

using common::fail;
using common::Result;

namespace {

// After the response, how long a connection may stay to let the client read it before we
// close: closing with unread request bytes would make the kernel send an RST that can
// destroy the response in flight (e.g. a 413 sent before the whole request was read).
constexpr std::chrono::milliseconds kLinger{2000};

std::string_view reasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

struct WriteRequest {
  uv_write_t req{};
  std::string data;
};

}  // namespace

std::string percentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < text.size() && hexValue(text[i + 1]) >= 0 && hexValue(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hexValue(text[i + 1]) * 16 + hexValue(text[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::map<std::string, std::string> parseQuery(std::string_view query) {
  std::map<std::string, std::string> out;
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) continue;
    auto eq = part.find('=');
    std::string key = percentDecode(part.substr(0, eq));
    std::string value = eq == std::string_view::npos ? std::string() : percentDecode(part.substr(eq + 1));
    out[std::move(key)] = std::move(value);
  }
  return out;
}

struct AdminServer::Connection {
  enum class State { Reading, Handling, Draining };

  union Handle {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } handle{};
  AdminServer* server = nullptr;
  llhttp_t parser{};
  std::string url;
  size_t received = 0;
  bool message_complete = false;
  State state = State::Reading;
  bool closing = false;
  bool peer_eof = false;
  // Our own timer handle rather than event::Timer: it must close together with the
  // socket, and the Connection is freed only when both close callbacks have run.
  uv_timer_t timer{};
  int open_handles = 2;
  std::shared_ptr<Connection*> token = std::make_shared<Connection*>(this);

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle); }
  uv_handle_t* raw() { return reinterpret_cast<uv_handle_t*>(&handle); }
  void armTimer(std::chrono::milliseconds after) {
    uv_timer_start(&timer, &Connection::onTimer, static_cast<uint64_t>(after.count()), 0);
  }
  static void onTimer(uv_timer_t* t);
  static void onClosed(uv_handle_t* h) {
    auto* c = static_cast<Connection*>(h->data);
    if (--c->open_handles == 0) delete c;
  }
};

void AdminServer::Connection::onTimer(uv_timer_t* t) {
  auto* c = static_cast<Connection*>(t->data);
  AdminServer* server = c->server;
  switch (c->state) {
    case State::Reading: server->reject(*c, 408, "request not received in time\n"); break;
    case State::Handling: server->reject(*c, 503, "the handler did not answer in time\n"); break;
    case State::Draining: server->closeConnection(*c); break;
  }
}

namespace {

const llhttp_settings_t& parserSettings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_url = [](llhttp_t* p, const char* at, size_t len) -> int {
      static_cast<std::string*>(p->data)->append(at, len);
      return HPE_OK;
    };
    // One request per connection: stop the parser at the end of the first message.
    s.on_message_complete = [](llhttp_t*) -> int { return HPE_PAUSED; };
    return s;
  }();
  return settings;
}

}  // namespace

AdminServer::AdminServer(event::Dispatcher& dispatcher, Options options)
    : dispatcher_(dispatcher), options_(std::move(options)) {}

Result<std::unique_ptr<AdminServer>> AdminServer::create(event::Dispatcher& dispatcher, Options options) {
  if (!options.address && options.socket_path.empty()) return fail("neither a TCP address nor a unix socket to listen on", "admin");
  ignoreSigpipe();
  std::unique_ptr<AdminServer> server(new AdminServer(dispatcher, std::move(options)));
  if (server->options_.address) {
    if (auto ok = server->listenTcp(); !ok) return std::unexpected(ok.error());
  }
  if (!server->options_.socket_path.empty()) {
    if (auto ok = server->listenPipe(); !ok) return std::unexpected(ok.error());
  }
  return server;
}

Result<void> AdminServer::listenTcp() {
  const std::string where = "admin.address";
  tcp_ = new uv_tcp_t{};
  uv_tcp_init(dispatcher_.loop(), tcp_);
  tcp_->data = this;
  int rc = uv_tcp_bind(tcp_, options_.address->sockaddr_ptr(), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp_), 128, &AdminServer::onConnection);
  if (rc != 0) return fail("cannot listen on " + options_.address->toString() + ": " + uv_strerror(rc), where);
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getsockname(tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    bound_address_ = common::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss));
  }
  return {};
}

Result<void> AdminServer::listenPipe() {
  auto listener = listenUnix(options_.socket_path, options_.unix_listen);
  if (!listener) return std::unexpected(common::nest("admin.socket", listener.error()));
  unix_listener_ = *listener;
  pipe_ = new uv_pipe_t{};
  uv_pipe_init(dispatcher_.loop(), pipe_, 0);
  pipe_->data = this;
  int rc = uv_pipe_open(pipe_, listener->fd);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(pipe_), 128, &AdminServer::onConnection);
  if (rc != 0) return fail(std::string("cannot listen: ") + uv_strerror(rc), "admin.socket");
  return {};
}

AdminServer::~AdminServer() {
  std::vector<Connection*> open(connections_.begin(), connections_.end());
  for (Connection* c : open) closeConnection(*c);
  if (tcp_ != nullptr) {
    tcp_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(tcp_), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  }
  if (pipe_ != nullptr) {
    pipe_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(pipe_), [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    removeUnixSocket(options_.socket_path, unix_listener_);
  }
}

void AdminServer::addHandler(std::string path,
                             std::function<void(const AdminRequest&, std::function<void(AdminResponse)>)> handler) {
  handlers_[std::move(path)] = std::move(handler);
}

void AdminServer::onConnection(uv_stream_t* listener, int status) {
  auto* self = static_cast<AdminServer*>(listener->data);
  if (self == nullptr) return;
  if (status != 0) {
    spdlog::warn("admin: accept failed: {}", uv_strerror(status));
    return;
  }
  self->accept(listener);
}

void AdminServer::accept(uv_stream_t* listener) {
  auto* c = new Connection();
  c->server = this;
  if (listener == reinterpret_cast<uv_stream_t*>(tcp_)) {
    uv_tcp_init(dispatcher_.loop(), &c->handle.tcp);
  } else {
    uv_pipe_init(dispatcher_.loop(), &c->handle.pipe, 0);
  }
  c->raw()->data = c;
  uv_timer_init(dispatcher_.loop(), &c->timer);
  c->timer.data = c;
  bool refuse = uv_accept(listener, c->stream()) != 0;
  if (!refuse && connections_.size() >= options_.max_connections) {
    ++counters_.connections_rejected;
    refuse = true;
  }
  if (refuse) {
    uv_close(c->raw(), &Connection::onClosed);
    uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), &Connection::onClosed);
    return;
  }
  ++counters_.connections_accepted;
  connections_.insert(c);
  llhttp_init(&c->parser, HTTP_REQUEST, &parserSettings());
  c->parser.data = &c->url;
  c->armTimer(options_.request_timeout);

  uv_read_start(
      c->stream(),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static thread_local char buffer[16384];
        *buf = uv_buf_init(buffer, sizeof buffer);
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* conn = static_cast<Connection*>(s->data);
        AdminServer* server = conn->server;
        if (nread == 0) return;
        if (nread < 0) {
          // A client may half-close once its request is sent: keep the connection for the
          // response. Otherwise (EOF mid-request, after the response, errors) close.
          if (nread == UV_EOF && conn->state == Connection::State::Handling) {
            uv_read_stop(s);
            conn->peer_eof = true;
            return;
          }
          server->closeConnection(*conn);
          return;
        }
        if (conn->state != Connection::State::Reading) return;  // discard (see kLinger)
        conn->received += static_cast<size_t>(nread);
        if (conn->received > server->options_.max_request_bytes) {
          server->reject(*conn, 413, "request exceeds " + std::to_string(server->options_.max_request_bytes) + " bytes\n");
          return;
        }
        llhttp_errno_t err = llhttp_execute(&conn->parser, buf->base, static_cast<size_t>(nread));
        if (err == HPE_PAUSED) {
          server->startRequest(*conn);
        } else if (err != HPE_OK) {
          server->reject(*conn, 400, std::string("malformed request: ") + llhttp_get_error_reason(&conn->parser) + "\n");
        }
      });
}

void AdminServer::startRequest(Connection& c) {
  c.state = Connection::State::Handling;
  if (c.parser.http_major != 1) {
    reject(c, 400, "only HTTP/1.x is served here\n");
    return;
  }
  AdminRequest request;
  request.method = llhttp_method_name(static_cast<llhttp_method_t>(c.parser.method));
  if (request.method != "GET") {
    reject(c, 405, "only GET is allowed\n");
    return;
  }
  std::string_view url = c.url;
  if (url.empty() || url.front() != '/') {
    reject(c, 400, "expected a path starting with '/'\n");
    return;
  }
  url = url.substr(0, url.find('#'));
  auto q = url.find('?');
  request.path = std::string(url.substr(0, q));
  if (q != std::string_view::npos) request.query = parseQuery(url.substr(q + 1));
  ++counters_.requests;

  auto it = handlers_.find(request.path);
  if (it == handlers_.end()) {
    respond(c, AdminResponse{404, "text/plain; charset=utf-8", "no handler for " + request.path + "\n"});
    return;
  }

  std::weak_ptr<Connection*> weak = c.token;
  auto done = std::make_shared<std::atomic<bool>>(false);
  event::Dispatcher* dispatcher = &dispatcher_;
  auto deliver = [weak](AdminResponse response) {
    if (auto token = weak.lock()) {
      Connection& conn = **token;
      if (conn.state == Connection::State::Handling) conn.server->respond(conn, response);
    }
  };
  auto reply = [deliver, done, dispatcher](AdminResponse response) {
    if (done->exchange(true)) return;
    if (dispatcher->isThisThread()) {
      deliver(std::move(response));
    } else {
      dispatcher->post([deliver, response = std::move(response)]() mutable { deliver(std::move(response)); });
    }
  };
  try {
    it->second(request, reply);
  } catch (const std::exception& e) {
    spdlog::error("admin handler for {} threw: {}", request.path, e.what());
    reply(AdminResponse{500, "text/plain; charset=utf-8", "internal error\n"});
  } catch (...) {
    spdlog::error("admin handler for {} threw", request.path);
    reply(AdminResponse{500, "text/plain; charset=utf-8", "internal error\n"});
  }
}

void AdminServer::reject(Connection& c, int status, std::string body) {
  ++counters_.bad_requests;
  respond(c, AdminResponse{status, "text/plain; charset=utf-8", std::move(body)});
}

void AdminServer::respond(Connection& c, const AdminResponse& response) {
  if (c.closing || c.state == Connection::State::Draining) return;
  c.state = Connection::State::Draining;
  int status = response.status >= 100 && response.status <= 599 ? response.status : 500;
  std::string content_type = response.content_type;
  // A header value from a handler must not be able to inject headers.
  if (content_type.find_first_of("\r\n") != std::string::npos) content_type = "application/octet-stream";
  auto* w = new WriteRequest();
  w->data.reserve(response.body.size() + 160);
  w->data += "HTTP/1.1 " + std::to_string(status) + " " + std::string(reasonPhrase(status)) + "\r\n";
  if (!content_type.empty()) w->data += "Content-Type: " + content_type + "\r\n";
  w->data += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
  if (status == 405) w->data += "Allow: GET\r\n";
  w->data += "Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
  w->data += response.body;
  w->req.data = &c;
  uv_buf_t buf = uv_buf_init(w->data.data(), w->data.size());
  int rc = uv_write(&w->req, c.stream(), &buf, 1, [](uv_write_t* req, int status) {
    auto* conn = static_cast<Connection*>(req->data);
    delete reinterpret_cast<WriteRequest*>(req);
    if (conn->closing) return;
    if (status != 0 || conn->peer_eof) {
      conn->server->closeConnection(*conn);
      return;
    }
    // Half-close and wait (bounded) for the client to close, discarding what it still sends.
    auto* shutdown = new uv_shutdown_t{};
    shutdown->data = conn;
    if (uv_shutdown(shutdown, conn->stream(), [](uv_shutdown_t* s, int) { delete s; }) != 0) {
      delete shutdown;
      conn->server->closeConnection(*conn);
      return;
    }
    conn->armTimer(kLinger);
  });
  if (rc != 0) {
    delete w;
    closeConnection(c);
    return;
  }
  // Keep reading (and discarding) so we notice the client's close; bound the write too.
  c.armTimer(kLinger + options_.request_timeout);
}

void AdminServer::closeConnection(Connection& c) {
  if (c.closing) return;
  c.closing = true;
  c.token.reset();
  connections_.erase(&c);
  uv_close(c.raw(), &Connection::onClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c.timer), &Connection::onClosed);
}

}  // namespace culvert::agent
