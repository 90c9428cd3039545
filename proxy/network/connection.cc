#include "proxy/network/connection.h"

#include <unistd.h>

#include <cstring>

namespace culvert::network {

const char* toString(CloseReason reason) {
  switch (reason) {
    case CloseReason::RemoteClose: return "remote_close";
    case CloseReason::ReadError: return "read_error";
    case CloseReason::WriteError: return "write_error";
    case CloseReason::ConnectFailed: return "connect_failed";
    case CloseReason::LocalClose: return "local_close";
  }
  return "unknown";
}

namespace {

// One read buffer per thread: libuv hands it to exactly one connection at a time and
// the data is consumed synchronously in onData.
constexpr size_t kReadBufferSize = 64 * 1024;
thread_local char t_read_buffer[kReadBufferSize];

}  // namespace

struct TcpConnection::ConnectRequest {
  uv_connect_t req;
  TcpConnection* connection;  // null once the connection is closed
  std::function<void(int)> done;
};

namespace {

struct WriteRequest {
  uv_write_t req;
  TcpConnection* connection;  // null once the connection is gone
  std::string data;
};

}  // namespace

TcpConnection::TcpConnection(event::Dispatcher& dispatcher, uv_tcp_t* handle)
    : dispatcher_(dispatcher), handle_(handle), created_at_(dispatcher.now()) {
  handle_->data = this;
}

common::Result<std::unique_ptr<TcpConnection>> TcpConnection::adopt(event::Dispatcher& dispatcher, int fd) {
  auto* handle = new uv_tcp_t;
  uv_tcp_init(dispatcher.loop(), handle);
  if (int rc = uv_tcp_open(handle, fd); rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(handle), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    ::close(fd);
    return common::fail(std::string("uv_tcp_open: ") + uv_strerror(rc));
  }
  uv_tcp_nodelay(handle, 1);
  return std::unique_ptr<TcpConnection>(new TcpConnection(dispatcher, handle));
}

TcpConnection::~TcpConnection() { close(); }

int TcpConnection::fd() const {
  uv_os_fd_t fd = -1;
  uv_fileno(reinterpret_cast<const uv_handle_t*>(handle_), &fd);
  return fd;
}

std::weak_ptr<bool> TcpConnection::aliveToken() {
  if (!alive_) alive_ = std::make_shared<bool>(true);
  return alive_;
}

void TcpConnection::connect(const common::SocketAddress& to, std::function<void(int)> done) {
  // The callback lives in the request, not in every connection (most never connect).
  auto* req = new ConnectRequest{{}, this, std::move(done)};
  req->req.data = req;
  int rc = uv_tcp_connect(&req->req, handle_, to.sockaddr_ptr(), [](uv_connect_t* r, int status) {
    std::unique_ptr<ConnectRequest> request(static_cast<ConnectRequest*>(r->data));
    TcpConnection* self = request->connection;
    if (self != nullptr) self->connecting_ = nullptr;
    if (status == UV_ECANCELED || self == nullptr) return;
    auto cb = std::move(request->done);
    request.reset();
    if (cb) cb(status);
  });
  if (rc != 0) {
    auto cb = std::move(req->done);
    delete req;
    // Report asynchronously so callers never re-enter themselves.
    dispatcher_.post([alive = aliveToken(), this, cb = std::move(cb), rc] {
      if (!alive.lock() || closed_) return;
      if (cb) cb(rc);
    });
    return;
  }
  connecting_ = req;
}

void TcpConnection::onAlloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  buf->base = t_read_buffer;
  buf->len = kReadBufferSize;
}

void TcpConnection::onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<TcpConnection*>(stream->data);
  if (self == nullptr || self->closed_) return;
  if (nread > 0) {
    if (self->callbacks_) self->callbacks_->onData(std::string_view(buf->base, static_cast<size_t>(nread)));
    return;
  }
  if (nread == 0) return;  // EAGAIN
  self->notifyClose(nread == UV_EOF ? CloseReason::RemoteClose : CloseReason::ReadError);
}

void TcpConnection::readEnable(bool enabled) {
  if (closed_ || enabled == reading_) return;
  reading_ = enabled;
  auto* stream = reinterpret_cast<uv_stream_t*>(handle_);
  if (enabled) {
    uv_read_start(stream, &TcpConnection::onAlloc, &TcpConnection::onRead);
  } else {
    uv_read_stop(stream);
  }
}

void TcpConnection::write(std::string_view data) {
  if (closed_ || data.empty()) return;
  auto* stream = reinterpret_cast<uv_stream_t*>(handle_);
  if (queued_write_bytes_ == 0) {
    uv_buf_t buf = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
    int n = uv_try_write(stream, &buf, 1);
    if (n == static_cast<int>(data.size())) return;
    if (n < 0 && n != UV_EAGAIN) {
      deferCloseNotification(CloseReason::WriteError);
      return;
    }
    if (n > 0) data.remove_prefix(static_cast<size_t>(n));
  }
  auto* wr = new WriteRequest{{}, this, std::string(data)};
  wr->req.data = wr;
  queued_write_bytes_ += wr->data.size();
  uv_buf_t buf = uv_buf_init(wr->data.data(), static_cast<unsigned>(wr->data.size()));
  int rc = uv_write(&wr->req, stream, &buf, 1, [](uv_write_t* req, int status) {
    auto* w = static_cast<WriteRequest*>(req->data);
    auto* self = static_cast<TcpConnection*>(req->handle->data);
    size_t size = w->data.size();
    delete w;
    if (self == nullptr || self->closed_) return;
    self->queued_write_bytes_ -= size;
    if (status < 0) {
      self->notifyClose(CloseReason::WriteError);
    } else if (self->queued_write_bytes_ == 0 && self->callbacks_) {
      self->callbacks_->onWriteDrained();
    }
  });
  if (rc != 0) {
    queued_write_bytes_ -= wr->data.size();
    delete wr;
    deferCloseNotification(CloseReason::WriteError);
  }
}

void TcpConnection::shutdownWrite() {
  if (closed_) return;
  auto* req = new uv_shutdown_t;
  if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(handle_), [](uv_shutdown_t* r, int) { delete r; }) != 0) {
    delete req;
  }
}

void TcpConnection::deferCloseNotification(CloseReason reason) {
  // The caller is in the middle of its own work (write() is called from callbacks that
  // may not expect to be destroyed); report on the next turn of the loop.
  dispatcher_.post([alive = aliveToken(), this, reason] {
    if (alive.lock()) notifyClose(reason);
  });
}

void TcpConnection::notifyClose(CloseReason reason) {
  if (close_notified_ || closed_) return;
  close_notified_ = true;
  if (reading_) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(handle_));
    reading_ = false;
  }
  if (callbacks_) callbacks_->onClose(reason);
}

void TcpConnection::close() {
  if (closed_) return;
  closed_ = true;
  callbacks_ = nullptr;
  if (connecting_ != nullptr) {
    // libuv cancels the request (UV_ECANCELED); its callback's captures go now.
    connecting_->connection = nullptr;
    connecting_->done = nullptr;
    connecting_ = nullptr;
  }
  handle_->data = nullptr;  // pending write and connect callbacks see a dead connection
  uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
}

}  // namespace culvert::network
