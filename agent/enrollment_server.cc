#include "agent/enrollment_server.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <vector>

namespace culvert::agent {

using common::fail;
using common::Result;

struct EnrollmentServer::Connection {
  uv_pipe_t pipe{};
  EnrollmentServer* server = nullptr;
  std::string in;
  bool busy = false;        // a request is with the handler; later lines wait
  bool eof = false;
  bool closing = false;
  bool reading = false;
  bool processing = false;  // inside processLines (a synchronous reply must not recurse)
  bool close_after_write = false;
  size_t pending_writes = 0;
  // Expires when the connection starts closing; replies hold a weak_ptr to it.
  std::shared_ptr<Connection*> token = std::make_shared<Connection*>(this);
};

namespace {

struct WriteRequest {
  uv_write_t req{};
  std::string data;
};

}  // namespace

EnrollmentServer::EnrollmentServer(event::Dispatcher& dispatcher, Options options, Handler handler)
    : dispatcher_(dispatcher), options_(std::move(options)), handler_(std::move(handler)) {}

Result<std::unique_ptr<EnrollmentServer>> EnrollmentServer::create(event::Dispatcher& dispatcher, Options options,
                                                                   Handler handler) {
  if (!handler) return fail("no handler", "enrollment.socket");
  ignoreSigpipe();
  std::unique_ptr<EnrollmentServer> server(new EnrollmentServer(dispatcher, std::move(options), std::move(handler)));
  auto listener = listenUnix(server->options_.socket_path, server->options_.listen);
  if (!listener) return std::unexpected(listener.error());
  server->listener_ = *listener;
  server->pipe_ = new uv_pipe_t{};
  uv_pipe_init(dispatcher.loop(), server->pipe_, 0);
  server->pipe_->data = server.get();
  int rc = uv_pipe_open(server->pipe_, listener->fd);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(server->pipe_), 128, &EnrollmentServer::onConnection);
  if (rc != 0) {
    // The destructor closes the pipe (and with it the fd) and removes the socket file.
    return fail(std::string("cannot listen: ") + uv_strerror(rc), server->options_.socket_path.string());
  }
  return server;
}

EnrollmentServer::~EnrollmentServer() {
  std::vector<Connection*> open(connections_.begin(), connections_.end());
  for (Connection* c : open) closeConnection(*c);
  if (pipe_ != nullptr) {
    pipe_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(pipe_), [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    removeUnixSocket(options_.socket_path, listener_);
  }
}

void EnrollmentServer::onConnection(uv_stream_t* server, int status) {
  auto* self = static_cast<EnrollmentServer*>(server->data);
  if (self == nullptr) return;
  if (status != 0) {
    spdlog::warn("enrollment socket {}: accept failed: {}", self->options_.socket_path.string(), uv_strerror(status));
    return;
  }
  self->accept();
}

void EnrollmentServer::accept() {
  auto* c = new Connection();
  c->server = this;
  uv_pipe_init(dispatcher_.loop(), &c->pipe, 0);
  c->pipe.data = c;
  auto closeRaw = [](uv_handle_t* h) { delete static_cast<Connection*>(h->data); };
  if (uv_accept(reinterpret_cast<uv_stream_t*>(pipe_), reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), closeRaw);
    return;
  }
  if (connections_.size() >= options_.max_connections) {
    ++counters_.connections_rejected;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), closeRaw);
    return;
  }
  ++counters_.connections_accepted;
  connections_.insert(c);
  startReading(*c);
}

void EnrollmentServer::startReading(Connection& c) {
  c.reading = true;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c.pipe),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* conn = static_cast<Connection*>(h->data);
        *buf = uv_buf_init(conn->server->read_buffer_.data(), conn->server->read_buffer_.size());
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* conn = static_cast<Connection*>(s->data);
        conn->server->onRead(*conn, nread, buf);
      });
}

void EnrollmentServer::onRead(Connection& c, ssize_t nread, const uv_buf_t* buf) {
  if (nread > 0) {
    c.in.append(buf->base, static_cast<size_t>(nread));
    processLines(c);
    return;
  }
  if (nread == 0) return;
  if (nread != UV_EOF) {
    closeConnection(c);
    return;
  }
  c.eof = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&c.pipe));
  c.reading = false;
  processLines(c);
}

void EnrollmentServer::processLines(Connection& c) {
  if (c.processing || c.closing) return;
  c.processing = true;
  while (!c.busy && !c.closing) {
    auto nl = c.in.find('\n');
    if (nl == std::string::npos) {
      if (c.in.size() > cni::kMaxRequestLineBytes) {
        // No way to find the next request boundary: answer and hang up.
        ++counters_.bad_requests;
        c.in.clear();
        send(c, EnrollmentResponse::failure("request exceeds " + std::to_string(cni::kMaxRequestLineBytes) + " bytes"),
             true);
        break;
      }
      if (c.eof && !c.in.empty()) {
        nl = c.in.size();  // a last request without its newline
      } else {
        break;
      }
    }
    std::string line = c.in.substr(0, nl);
    c.in.erase(0, std::min(nl + 1, c.in.size()));
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
    dispatch(c, std::move(line));
  }
  c.processing = false;
  if (c.closing) return;
  // Keep reading while the handler works, to notice a client that gives up, but stop
  // when a pipelining client has queued more than a full request: buffering is bounded.
  if (c.busy && c.reading && c.in.size() > cni::kMaxRequestLineBytes) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c.pipe));
    c.reading = false;
  } else if (!c.busy && !c.reading && !c.eof && !c.close_after_write) {
    startReading(c);
  }
  if (!c.busy && c.eof) {
    if (c.pending_writes == 0) {
      closeConnection(c);
    } else {
      c.close_after_write = true;
    }
  }
}

void EnrollmentServer::dispatch(Connection& c, std::string line) {
  auto request = cni::parseRequest(line);
  if (!request) {
    ++counters_.bad_requests;
    spdlog::warn("enrollment: bad request: {}", request.error().describe());
    send(c, EnrollmentResponse::failure("bad request: " + request.error().describe()), false);
    return;
  }
  ++counters_.requests;
  c.busy = true;

  std::weak_ptr<Connection*> weak = c.token;
  auto done = std::make_shared<std::atomic<bool>>(false);
  event::Dispatcher* dispatcher = &dispatcher_;
  std::weak_ptr<EnrollmentServer*> weak_server = alive_;
  auto deliver = [weak, weak_server](EnrollmentResponse response) {
    auto token = weak.lock();
    if (!token) {
      // The client went away (it retries or has timed out); count it if we still exist.
      if (auto server = weak_server.lock()) ++(*server)->counters_.replies_dropped;
      return;
    }
    Connection& conn = **token;
    conn.server->send(conn, response, false);
    conn.busy = false;
    conn.server->processLines(conn);
  };
  auto reply = [deliver, done, dispatcher](EnrollmentResponse response) {
    if (done->exchange(true)) return;  // the handler answered twice; the first answer stands
    if (dispatcher->isThisThread()) {
      deliver(std::move(response));
    } else {
      dispatcher->post([deliver, response = std::move(response)]() mutable { deliver(std::move(response)); });
    }
  };
  try {
    handler_(*request, reply);
  } catch (const std::exception& e) {
    spdlog::error("enrollment handler threw: {}", e.what());
    reply(EnrollmentResponse::failure(std::string("internal error: ") + e.what()));
  } catch (...) {
    spdlog::error("enrollment handler threw");
    reply(EnrollmentResponse::failure("internal error"));
  }
}

void EnrollmentServer::send(Connection& c, const EnrollmentResponse& response, bool close_after) {
  if (c.closing) {
    ++counters_.replies_dropped;
    return;
  }
  auto* w = new WriteRequest();
  w->data = cni::encodeResponse(response);
  w->req.data = &c;
  uv_buf_t buf = uv_buf_init(w->data.data(), w->data.size());
  if (close_after) c.close_after_write = true;
  ++c.pending_writes;
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c.pipe), &buf, 1, [](uv_write_t* req, int status) {
    auto* wr = reinterpret_cast<WriteRequest*>(req);
    auto* conn = static_cast<Connection*>(req->data);
    delete wr;
    --conn->pending_writes;
    if (conn->closing) return;
    if (status != 0) ++conn->server->counters_.replies_dropped;
    if (status != 0 || (conn->close_after_write && conn->pending_writes == 0)) conn->server->closeConnection(*conn);
  });
  if (rc != 0) {
    --c.pending_writes;
    delete w;
    closeConnection(c);
  }
}

void EnrollmentServer::closeConnection(Connection& c) {
  if (c.closing) return;
  c.closing = true;
  c.token.reset();
  connections_.erase(&c);
  uv_close(reinterpret_cast<uv_handle_t*>(&c.pipe), [](uv_handle_t* h) { delete static_cast<Connection*>(h->data); });
}

}  // namespace culvert::agent
