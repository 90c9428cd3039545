#include "proxy/network/connection.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

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

// A shared connection's read in progress: onAlloc notes whose it is and when it started,
// onRead (called right after the read, on the same thread) charges its time.
struct SharedRead {
  WorkShare share;
  std::chrono::steady_clock::time_point started;
};
thread_local SharedRead t_shared_read;

// Whether a shared connection's read waits: its tenant is over its share (until a
// round), or has had its part of this loop turn (until the next turn).
bool readWaits(const WorkShare& share) {
  return share.scheduler->overShare(share.tenant) || share.scheduler->turnSpent(share.tenant, share.weight);
}

// A shared-writes connection gives libuv at most this much per loop turn.
constexpr size_t kWriteSlice = 64 * 1024;

// This thread's coalescing buffers not in use, capacity kept: a connection takes one at
// its first write of a turn and gives it back at the turn's end, so a busy turn of small
// writes allocates little. Bounded in number and size (a worker keeps ≤ 32 × 4 KiB): 128
// kept the HTTP/2 bench's resident set 0.1–0.2 MiB higher after load.
constexpr size_t kSpareBuffersKept = 32;
constexpr size_t kSpareBufferCapacity = 4 * 1024;
thread_local std::vector<std::unique_ptr<std::string>> t_spare_buffers;

std::string* takeBuffer() {
  if (t_spare_buffers.empty()) return new std::string;
  std::string* buffer = t_spare_buffers.back().release();
  t_spare_buffers.pop_back();
  return buffer;
}

void giveBack(std::string* buffer) {
  if (t_spare_buffers.size() >= kSpareBuffersKept || buffer->capacity() > kSpareBufferCapacity) {
    delete buffer;
    return;
  }
  buffer->clear();
  t_spare_buffers.emplace_back(buffer);
}

}  // namespace

struct TcpConnection::ConnectRequest {
  uv_connect_t req;
  TcpConnection* connection;  // null once the connection is closed
  std::function<void(int)> done;
};

namespace {

struct WriteRequest {
  uv_write_t req;
  std::string data;
};

}  // namespace

// While it exists, either a slice is with libuv or the tenant is paused (`pause`).
// Held bytes are kept as ready-made slices of at most kWriteSlice: each byte is copied
// once, on the way in, and a slice moves to libuv whole. (One buffer sliced on the way out
// copied each byte of a relayed 1 MiB body twice more: the slice, and the buffer's
// compaction.)
struct TcpConnection::HeldWrites {
  // Not yet given to libuv, in order, from `next` (a vector: a deque would allocate a
  // 512-byte block for every connection that holds anything).
  std::vector<std::string> slices;
  size_t next = 0;
  size_t bytes = 0;
  bool shutdown_after = false;  // shutdownWrite() came while bytes were held
  std::unique_ptr<event::Scheduler::Pause> pause;

  size_t size() const { return bytes; }
  void append(std::string_view data) {
    bytes += data.size();
    while (!data.empty()) {
      if (slices.size() == next || slices.back().size() >= kWriteSlice) {
        slices.emplace_back().reserve(std::min(kWriteSlice, data.size()));
      }
      auto& last = slices.back();
      size_t n = std::min(kWriteSlice - last.size(), data.size());
      last.append(data.data(), n);
      data.remove_prefix(n);
    }
  }
  std::string takeSlice() {
    std::string slice = std::move(slices[next++]);
    bytes -= slice.size();
    if (next == slices.size()) {
      slices.clear();
      next = 0;
    } else if (next >= 16 && next * 2 >= slices.size()) {
      // A long relay that never drains: drop the taken (empty) entries now and then.
      slices.erase(slices.begin(), slices.begin() + static_cast<std::ptrdiff_t>(next));
      next = 0;
    }
    return slice;
  }
};

TcpConnection::TcpConnection(event::Dispatcher& dispatcher, uv_tcp_t* handle)
    : dispatcher_(dispatcher), handle_(handle) {
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

void TcpConnection::onAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* self = static_cast<TcpConnection*>(handle->data);
  if (self != nullptr && self->callbacks_ != nullptr) {
    auto share = self->callbacks_->readShare();
    if (share.scheduler != nullptr) {
      if (readWaits(share)) {
        *buf = uv_buf_init(nullptr, 0);  // libuv reads nothing and reports UV_ENOBUFS
        return;
      }
      if (share.scheduler->yieldsInTurn(share.tenant)) {
        if (!self->read_late_) {
          self->read_late_ = true;
          self->dispatcher_.lateInTurn<TcpConnection, &TcpConnection::readLate>(self);
        }
        *buf = uv_buf_init(nullptr, 0);
        return;
      }
      t_shared_read = {share, std::chrono::steady_clock::now()};
    }
  }
  buf->base = t_read_buffer;
  buf->len = kReadBufferSize;
}

void TcpConnection::onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  if (t_shared_read.share.scheduler != nullptr) {
    // The read system call libuv just made (a copy of up to 64 KiB) is the tenant's work.
    auto& r = t_shared_read;
    r.share.scheduler->charge(r.share.tenant, r.share.weight, std::chrono::steady_clock::now() - r.started);
    r.share.scheduler = nullptr;
  }
  auto* self = static_cast<TcpConnection*>(stream->data);
  if (self == nullptr || self->closed_) return;
  if (nread > 0) {
    if (self->callbacks_) self->callbacks_->onData(std::string_view(buf->base, static_cast<size_t>(nread)));
    return;
  }
  if (nread == 0) return;  // EAGAIN
  if (nread == UV_ENOBUFS) {
    // onAlloc refused the read. Over its share, the tenant waits for a round; having had
    // its part of this turn, it is read next turn (the socket stays armed).
    self->waitForReadShare();
    return;
  }
  self->notifyClose(nread == UV_EOF ? CloseReason::RemoteClose : CloseReason::ReadError);
}

void TcpConnection::readLate() {
  read_late_ = false;
  // Reads as libuv's read callback would: while the buffer comes back full, the owner
  // still reads, and the tenant has not had its part of the turn.
  while (!closed_ && reading_ && !read_share_wait_ && callbacks_ != nullptr) {
    auto share = callbacks_->readShare();
    if (share.scheduler != nullptr && readWaits(share)) {
      // As a read refused in onAlloc: a pause over the share, else the socket stays
      // armed and the next turn reads it.
      waitForReadShare();
      return;
    }
    auto started = std::chrono::steady_clock::now();
    ssize_t nread = ::read(fd(), t_read_buffer, kReadBufferSize);
    int error = errno;
    if (share.scheduler != nullptr) {
      share.scheduler->charge(share.tenant, share.weight, std::chrono::steady_clock::now() - started);
    }
    if (nread > 0) {
      callbacks_->onData(std::string_view(t_read_buffer, static_cast<size_t>(nread)));
      if (static_cast<size_t>(nread) < kReadBufferSize) return;
      continue;
    }
    if (nread < 0 && (error == EAGAIN || error == EWOULDBLOCK || error == EINTR)) return;
    notifyClose(nread == 0 ? CloseReason::RemoteClose : CloseReason::ReadError);
    return;
  }
}

void TcpConnection::setCallbacks(ConnectionCallbacks* callbacks) {
  callbacks_ = callbacks;
  if (read_share_wait_) {
    read_share_wait_.reset();
    applyReading();
  }
}

void TcpConnection::readEnable(bool enabled) {
  if (closed_ || enabled == reading_) return;
  reading_ = enabled;
  applyReading();
}

void TcpConnection::applyReading() {
  auto* stream = reinterpret_cast<uv_stream_t*>(handle_);
  if (reading_ && !read_share_wait_) {
    uv_read_start(stream, &TcpConnection::onAlloc, &TcpConnection::onRead);
  } else {
    uv_read_stop(stream);
  }
}

void TcpConnection::waitForReadShare() {
  auto share = callbacks_ ? callbacks_->readShare() : WorkShare{};
  if (share.scheduler == nullptr || !share.scheduler->overShare(share.tenant)) return;
  // Stopped here, not in onAlloc: libuv calls the read callback after a refused alloc.
  read_share_wait_ = share.scheduler->pause(share.tenant, [this] {
    read_share_wait_.reset();
    applyReading();
  });
  if (share.paused != nullptr) share.paused->inc();
  applyReading();
}

void TcpConnection::write(std::string_view data) {
  if (closed_ || data.empty()) return;
  // Behind bytes the kernel has not taken (nothing is coalesced then): in order.
  if (queued_write_bytes_ > 0) {
    enqueue(data);
    return;
  }
  size_t coalesced = coalesced_ ? coalesced_->size() : 0;
  if (coalesced + data.size() > kCoalescedBytes || (coalesced_ == nullptr && dispatcher_.atTurnEndNow())) {
    // A large write (a relayed body's read) gains nothing from waiting, and would cost a
    // copy; nor does a write made at the turn's end (the HTTP/2 session's flush).
    writeNow(data);
    return;
  }
  if (coalesced_ == nullptr) {
    coalesced_ = takeBuffer();
    turn_end_ticket_ = dispatcher_.atTurnEnd(this);
  }
  coalesced_->append(data);
}

void TcpConnection::onTurnEnd() {
  // Written outside the work that produced them: charged to that tenant here.
  auto share = callbacks_ ? callbacks_->writeShare() : WorkShare{};
  if (share.scheduler != nullptr) {
    share.scheduler->run(share.tenant, share.weight, [this] { writeNow({}); });
  } else {
    writeNow({});
  }
}

void TcpConnection::writeNow(std::string_view more) {
  std::string_view first = coalesced_ ? std::string_view(*coalesced_) : std::string_view();
  uv_buf_t bufs[2];
  unsigned count = 0;
  if (!first.empty()) bufs[count++] = uv_buf_init(const_cast<char*>(first.data()), static_cast<unsigned>(first.size()));
  if (!more.empty()) bufs[count++] = uv_buf_init(const_cast<char*>(more.data()), static_cast<unsigned>(more.size()));
  int written = count == 0 ? 0 : uv_try_write(reinterpret_cast<uv_stream_t*>(handle_), bufs, count);
  if (written < 0 && written != UV_EAGAIN) {
    deferCloseNotification(CloseReason::WriteError);
  } else {
    size_t taken = written > 0 ? static_cast<size_t>(written) : 0;
    size_t from_first = std::min(taken, first.size());
    first.remove_prefix(from_first);
    more.remove_prefix(taken - from_first);
    if (!first.empty()) enqueue(first);  // copies: the buffer goes back below
    if (!more.empty()) enqueue(more);
  }
  releaseCoalesced();
}

void TcpConnection::releaseCoalesced() {
  if (coalesced_ == nullptr) return;
  dispatcher_.cancelTurnEnd(turn_end_ticket_);
  giveBack(coalesced_);
  coalesced_ = nullptr;
}

void TcpConnection::enqueue(std::string_view data) {
  queued_write_bytes_ += data.size();
  if (!held_) {
    auto share = callbacks_ ? callbacks_->writeShare() : WorkShare{};
    if (share.scheduler == nullptr) {
      queueWrite(std::string(data));
      return;
    }
    held_ = std::make_unique<HeldWrites>();
    held_->append(data);
    // Inside the caller's work, already charged: no scheduler.run of its own.
    if (!holdForShare(share)) sendSlice();
    return;
  }
  held_->append(data);
}

void TcpConnection::queueWrite(std::string data) {
  auto* wr = new WriteRequest{{}, std::move(data)};
  wr->req.data = wr;
  uv_buf_t buf = uv_buf_init(wr->data.data(), static_cast<unsigned>(wr->data.size()));
  int rc = uv_write(&wr->req, reinterpret_cast<uv_stream_t*>(handle_), &buf, 1, [](uv_write_t* req, int status) {
    auto* w = static_cast<WriteRequest*>(req->data);
    auto* self = static_cast<TcpConnection*>(req->handle->data);
    size_t size = w->data.size();
    delete w;
    if (self != nullptr && !self->closed_) self->onQueuedWriteDone(size, status);
  });
  if (rc != 0) {
    delete wr;
    deferCloseNotification(CloseReason::WriteError);
  }
}

void TcpConnection::onQueuedWriteDone(size_t size, int status) {
  queued_write_bytes_ -= size;
  if (status < 0) {
    notifyClose(CloseReason::WriteError);
    return;
  }
  if (held_) {
    if (held_->size() > 0) {
      paceNextSlice();
      return;
    }
    bool shutdown = held_->shutdown_after;
    held_.reset();
    if (shutdown) shutdownNow();
  }
  if (queued_write_bytes_ == 0 && callbacks_) callbacks_->onWriteDrained();
}

bool TcpConnection::holdForShare(const WorkShare& share) {
  if (!share.scheduler->overShare(share.tenant)) return false;
  held_->pause = share.scheduler->pause(share.tenant, [this] {
    held_->pause.reset();
    paceNextSlice();
  });
  return true;
}

void TcpConnection::paceNextSlice() {
  auto share = callbacks_ ? callbacks_->writeShare() : WorkShare{};
  if (share.scheduler == nullptr) {
    sendSlice();  // no longer shared (the owner changed): on at libuv's pace
    return;
  }
  if (holdForShare(share)) return;
  share.scheduler->run(share.tenant, share.weight, [this] { sendSlice(); });
}

void TcpConnection::sendSlice() { queueWrite(held_->takeSlice()); }

void TcpConnection::shutdownWrite() {
  if (closed_) return;
  if (coalesced_ != nullptr) writeNow({});  // libuv's FIN follows only its own queue
  if (held_) {
    // Bytes still held in user space go first: libuv only orders the FIN after its own queue.
    held_->shutdown_after = true;
    return;
  }
  shutdownNow();
}

void TcpConnection::shutdownNow() {
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
  reading_ = false;
  read_share_wait_.reset();
  uv_read_stop(reinterpret_cast<uv_stream_t*>(handle_));
  if (callbacks_) callbacks_->onClose(reason);
}

void TcpConnection::close() {
  if (closed_) return;
  if (coalesced_ != nullptr) {
    // What the kernel takes now, as a write made just before the close would have.
    uv_buf_t buf = uv_buf_init(coalesced_->data(), static_cast<unsigned>(coalesced_->size()));
    uv_try_write(reinterpret_cast<uv_stream_t*>(handle_), &buf, 1);
    releaseCoalesced();
  }
  closed_ = true;
  callbacks_ = nullptr;
  if (read_late_) {
    dispatcher_.cancelLateInTurn(this);
    read_late_ = false;
  }
  held_.reset();  // drops held bytes and any pause
  read_share_wait_.reset();
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
