#include "proxy/upstream/connection_pool.h"

#include <algorithm>
#include <cstring>

#include "proxy/network/socket.h"

namespace culvert::upstream {

// A parked connection: watches for the upstream closing it. It stays readable while it
// moves between pool and request, so parking and reuse cost no epoll_ctl and no timer: the
// pool's one sweep timer closes connections idle for too long.
class ConnectionPool::Idle : public network::ConnectionCallbacks {
public:
  Idle(ConnectionPool& pool, PoolKey key, std::unique_ptr<network::TcpConnection> connection)
      : pool_(pool), key_(std::move(key)), connection_(std::move(connection)), since_(pool.dispatcher_.now()) {
    connection_->setCallbacks(this);
    connection_->readEnable(true);
  }
  // Bytes on an idle HTTP/1.1 connection, or its close, make it unusable.
  void onData(std::string_view) override { pool_.removeIdle(this); }
  void onClose(network::CloseReason) override { pool_.removeIdle(this); }

  std::unique_ptr<network::TcpConnection> take() {
    connection_->setCallbacks(nullptr);
    return std::move(connection_);
  }
  const PoolKey& key() const { return key_; }
  std::chrono::steady_clock::time_point since() const { return since_; }

private:
  ConnectionPool& pool_;
  PoolKey key_;
  std::unique_ptr<network::TcpConnection> connection_;
  std::chrono::steady_clock::time_point since_;
};

namespace {

class Connecting : public PendingConnection {
public:
  Connecting(event::Dispatcher& dispatcher, std::unique_ptr<network::TcpConnection> connection,
             const common::SocketAddress& endpoint, std::chrono::milliseconds timeout, ConnectionPool::Ready ready)
      : connection_(std::move(connection)), ready_(std::move(ready)),
        timer_(dispatcher.createTimer([this] { finish(common::fail("connect timeout", endpoint_)); })),
        endpoint_(endpoint.toString()) {
    timer_->enable(timeout);
    connection_->connect(endpoint, [this](int status) {
      if (status == 0) {
        finish(std::move(connection_));
      } else {
        finish(common::fail(std::string("connect: ") + uv_strerror(status), endpoint_));
      }
    });
  }

private:
  void finish(common::Result<std::unique_ptr<network::TcpConnection>> result) {
    timer_->disable();
    auto ready = std::move(ready_);
    // `ready` may destroy this object; touch nothing after it.
    if (ready) ready(std::move(result));
  }

  std::unique_ptr<network::TcpConnection> connection_;
  ConnectionPool::Ready ready_;
  std::unique_ptr<event::Timer> timer_;
  std::string endpoint_;
};

}  // namespace

ConnectionPool::ConnectionPool(event::Dispatcher& dispatcher, network::SocketTagger* tagger,
                               std::chrono::milliseconds idle_timeout)
    : dispatcher_(dispatcher), tagger_(tagger), idle_timeout_(idle_timeout) {}

ConnectionPool::~ConnectionPool() = default;

std::unique_ptr<PendingConnection> ConnectionPool::acquire(const ConnectRequest& request, Ready ready) {
  if (auto it = idle_.find(request.key); it != idle_.end() && !it->second.empty()) {
    // Most recently used first: it is the least likely to have been closed by the peer.
    auto conn = it->second.back()->take();
    it->second.pop_back();
    if (it->second.empty()) idle_.erase(it);
    ready(std::move(conn));
    return nullptr;
  }
  auto fd = network::createTcpSocketInNetns(request.netns_fd, request.endpoint.family());
  if (!fd) {
    ready(std::unexpected(fd.error()));
    return nullptr;
  }
  if (tagger_) {
    if (auto tagged = tagger_->tag(fd->get()); !tagged) {
      ready(std::unexpected(common::nest("tag upstream socket", tagged.error())));
      return nullptr;
    }
  }
  auto conn = network::TcpConnection::adopt(dispatcher_, fd->release());
  if (!conn) {
    ready(std::unexpected(conn.error()));
    return nullptr;
  }
  ++created_;
  if (request.lifetime_token) (*conn)->attach(request.lifetime_token);
  return std::make_unique<Connecting>(dispatcher_, std::move(*conn), request.endpoint, request.connect_timeout,
                                      std::move(ready));
}

void ConnectionPool::release(const PoolKey& key, std::unique_ptr<network::TcpConnection> connection) {
  if (!connection || connection->closed()) return;
  if (!isLive(key)) {
    // Its endpoint left: closed, not parked. The caller may be inside the connection's
    // own read callback, so it is destroyed after that returns.
    connection->close();
    dispatcher_.deferredDelete(std::move(connection));
    return;
  }
  idle_[key].push_back(std::make_unique<Idle>(*this, key, std::move(connection)));
  if (!sweep_) {
    sweep_ = dispatcher_.createTimer([this] { sweep(); });
    auto period = std::max<std::chrono::milliseconds>(idle_timeout_ / 4, std::chrono::milliseconds(100));
    sweep_->enable(period, period);
  }
}

void ConnectionPool::sweep() {
  auto deadline = dispatcher_.now() - idle_timeout_;
  for (auto it = idle_.begin(); it != idle_.end();) {
    // Oldest first in each list: stop at the first one still young enough.
    auto& list = it->second;
    while (!list.empty() && list.front()->since() <= deadline) list.pop_front();
    it = list.empty() ? idle_.erase(it) : std::next(it);
  }
}

void ConnectionPool::removeIdle(Idle* idle) {
  auto it = idle_.find(idle->key());
  if (it == idle_.end()) return;
  auto& list = it->second;
  for (auto li = list.begin(); li != list.end(); ++li) {
    if (li->get() == idle) {
      // Called from the idle connection's own callback: delete after it returns.
      dispatcher_.deferredDelete(std::move(*li));
      list.erase(li);
      break;
    }
  }
  if (list.empty()) idle_.erase(it);
}

void ConnectionPool::drainPod(uint64_t pod_id) {
  for (auto it = idle_.begin(); it != idle_.end();) {
    if (it->first.pod_id == pod_id) {
      it = idle_.erase(it);
    } else {
      ++it;
    }
  }
}

bool ConnectionPool::hasIdle(const PoolKey& key) const {
  auto it = idle_.find(key);
  return it != idle_.end() && !it->second.empty();
}

bool ConnectionPool::isLive(const PoolKey& key) const {
  // Keys without a cluster (never parked today) and the time before any configuration
  // count as live.
  if (!live_ || key.cluster.empty()) return true;
  return live_(key.cluster, key.endpoint);
}

void ConnectionPool::setLiveEndpoints(LiveEndpoint is_live) {
  live_ = std::move(is_live);
  for (auto it = idle_.begin(); it != idle_.end();) {
    it = isLive(it->first) ? std::next(it) : idle_.erase(it);
  }
}

size_t ConnectionPool::idleCount() const {
  size_t n = 0;
  for (const auto& [key, list] : idle_) n += list.size();
  return n;
}

}  // namespace culvert::upstream
