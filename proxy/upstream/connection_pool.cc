#include "proxy/upstream/connection_pool.h"

#include <algorithm>
#include <cstring>

#include "proxy/common/recycled.h"
#include "proxy/network/socket.h"

namespace culvert::upstream {

EarliestDeadline::EarliestDeadline(event::Dispatcher& dispatcher, std::function<void()> on_due)
    : dispatcher_(dispatcher), on_due_(std::move(on_due)), timer_(dispatcher.createTimer([this] {
        armed_ = kNever;
        on_due_();
      })) {}

void EarliestDeadline::request(TimePoint at) {
  if (at >= armed_) return;
  armed_ = at;
  auto wait = std::chrono::ceil<std::chrono::milliseconds>(at - dispatcher_.now());
  timer_->enable(std::max(wait, std::chrono::milliseconds(0)));
}

// A parked connection: watches for the upstream closing it. It stays readable while it
// moves between pool and request, so parking and reuse cost no epoll_ctl and usually no
// timer change: the pool's one timer is due at the earliest deadline of all. One is made
// per keep-alive response: its blocks are reused (common/recycled.h).
class ConnectionPool::Idle : public network::ConnectionCallbacks, public common::Recycled<ConnectionPool::Idle> {
public:
  Idle(ConnectionPool& pool, PoolKey key, std::unique_ptr<network::TcpConnection> connection,
       std::chrono::steady_clock::time_point deadline, LifetimeEnd why)
      : pool_(pool), key_(std::move(key)), connection_(std::move(connection)), deadline_(deadline), why_(why) {
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
  std::chrono::steady_clock::time_point deadline() const { return deadline_; }
  LifetimeEnd why() const { return why_; }

private:
  ConnectionPool& pool_;
  PoolKey key_;
  std::unique_ptr<network::TcpConnection> connection_;
  std::chrono::steady_clock::time_point deadline_;
  LifetimeEnd why_;
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

LentConnection::~LentConnection() {
  if (pool_) pool_->giveBack(*this);
}

ConnectionPool::ConnectionPool(event::Dispatcher& dispatcher, network::SocketTagger* tagger,
                               std::chrono::milliseconds idle_timeout, common::StatsStore* stats,
                               std::chrono::milliseconds drain_timeout)
    : dispatcher_(dispatcher), tagger_(tagger), idle_timeout_(idle_timeout), stats_(stats),
      drain_timeout_(drain_timeout), sweep_(dispatcher, [this] { sweep(); }) {}

ConnectionPool::~ConnectionPool() {
  while (lent_) giveBack(*lent_);
}

void ConnectionPool::lend(LentConnection& lent, const PoolKey& key) {
  if (lent.pool_) giveBack(lent);
  lent.pool_ = this;
  lent.key_ = &key;
  lent.prev_ = nullptr;
  lent.next_ = lent_;
  if (lent_) lent_->prev_ = &lent;
  lent_ = &lent;
  if (!isLive(key)) {
    // Lent after its endpoint left (a connection made just before): it drains from now.
    lent.drain_deadline_ = dispatcher_.now() + drain_timeout_;
    ++lent_draining_;
    sweep_.request(lent.drain_deadline_);
  }
}

void ConnectionPool::giveBack(LentConnection& lent) {
  if (lent.pool_ != this) return;
  if (lent.prev_) {
    lent.prev_->next_ = lent.next_;
  } else {
    lent_ = lent.next_;
  }
  if (lent.next_) lent.next_->prev_ = lent.prev_;
  if (lent.drain_deadline_ != EarliestDeadline::kNever) --lent_draining_;
  lent.pool_ = nullptr;
  lent.key_ = nullptr;
  lent.prev_ = lent.next_ = nullptr;
  lent.drain_deadline_ = EarliestDeadline::kNever;
}

void ConnectionPool::startLentDrains() {
  auto deadline = dispatcher_.now() + drain_timeout_;
  bool started = false;
  for (auto* lent = lent_; lent; lent = lent->next_) {
    if (lent->drain_deadline_ != EarliestDeadline::kNever || isLive(*lent->key_)) continue;
    lent->drain_deadline_ = deadline;
    ++lent_draining_;
    started = true;
  }
  if (started) sweep_.request(deadline);
}

EarliestDeadline::TimePoint ConnectionPool::endDueLentDrains(EarliestDeadline::TimePoint now) {
  // Ending a loan calls out to its holder, which may give back or destroy any other loan
  // (a request ending its hedged attempts): find the next due one from the head again.
  for (;;) {
    auto next = EarliestDeadline::kNever;
    LentConnection* due = nullptr;
    for (auto* lent = lent_; lent && !due; lent = lent->next_) {
      if (lent->drain_deadline_ <= now && isLive(*lent->key_)) {
        // Its endpoint came back before the deadline: no longer draining.
        lent->drain_deadline_ = EarliestDeadline::kNever;
        --lent_draining_;
      } else if (lent->drain_deadline_ <= now) {
        due = lent;
      } else {
        next = std::min(next, lent->drain_deadline_);
      }
    }
    if (!due) return next;
    countLifetimeEnd(*due->key_, LifetimeEnd::DrainTimeout);
    giveBack(*due);
    due->onDrainTimeout();
  }
}

std::unique_ptr<PendingConnection> ConnectionPool::acquire(const ConnectRequest& request, Ready ready) {
  if (auto it = idle_.find(request.key); it != idle_.end()) {
    // Most recently used first: it is the least likely to have been closed by the peer.
    // One past its deadline whose timer has not run yet is not handed out.
    auto& list = it->second;
    auto now = dispatcher_.now();
    while (!list.empty() && list.back()->deadline() <= now) {
      countLifetimeEnd(it->first, list.back()->why());
      list.pop_back();
    }
    if (!list.empty()) {
      // An emptied list stays for the connection's release (the next sweep drops it):
      // a key's map node is not freed and made again for every request.
      auto conn = list.back()->take();
      list.pop_back();
      ready(std::move(conn));
      return nullptr;
    }
  }
  auto fd = network::createTcpSocketInNetns(request.netns_fd, request.key.endpoint.family());
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
  (*conn)->setPoolFacts(request.lifetime_token, dispatcher_.now());
  return std::make_unique<Connecting>(dispatcher_, std::move(*conn), request.key.endpoint, request.connect_timeout,
                                      std::move(ready));
}

void ConnectionPool::release(const PoolKey& key, std::unique_ptr<network::TcpConnection> connection) {
  if (!connection || connection->closed()) return;
  if (!isLive(key)) {
    // Its endpoint left: closed, not parked.
    closeLater(std::move(connection));
    return;
  }
  auto lifetime = lifetimeOf(key);
  auto exchanges = connection->countExchange();
  if (lifetime.max_requests > 0 && exchanges >= lifetime.max_requests) {
    countLifetimeEnd(key, LifetimeEnd::MaxRequests);
    closeLater(std::move(connection));
    return;
  }
  auto now = dispatcher_.now();
  auto idle_end = lifetime.idle_timeout.count() > 0 ? now + lifetime.idle_timeout : EarliestDeadline::kNever;
  auto life_end =
      lifetime.max_duration.count() > 0 ? connection->createdAt() + lifetime.max_duration : EarliestDeadline::kNever;
  if (life_end <= now) {
    // Too old to be reused: its exchange was its last.
    countLifetimeEnd(key, LifetimeEnd::MaxDuration);
    closeLater(std::move(connection));
    return;
  }
  auto why = life_end < idle_end ? LifetimeEnd::MaxDuration : LifetimeEnd::IdleTimeout;
  auto deadline = std::min(idle_end, life_end);
  idle_[key].push_back(std::make_unique<Idle>(*this, key, std::move(connection), deadline, why));
  if (deadline != EarliestDeadline::kNever) sweep_.request(deadline);
}

void ConnectionPool::closeLater(std::unique_ptr<network::TcpConnection> connection) {
  // The caller may be inside the connection's own read callback: destroyed after it returns.
  connection->close();
  dispatcher_.deferredDelete(std::move(connection));
}

void ConnectionPool::sweep() {
  auto now = dispatcher_.now();
  auto next = lent_draining_ > 0 ? endDueLentDrains(now) : EarliestDeadline::kNever;
  for (auto it = idle_.begin(); it != idle_.end();) {
    auto& list = it->second;
    for (auto li = list.begin(); li != list.end();) {
      if ((*li)->deadline() <= now) {
        countLifetimeEnd(it->first, (*li)->why());
        li = list.erase(li);
      } else {
        next = std::min(next, (*li)->deadline());
        ++li;
      }
    }
    it = list.empty() ? idle_.erase(it) : std::next(it);
  }
  if (next != EarliestDeadline::kNever) sweep_.request(next);
}

config::ConnectionLifetime ConnectionPool::lifetimeOf(const PoolKey& key) const {
  if (lifetime_of_ && !key.cluster.empty()) return lifetime_of_(key.cluster);
  config::ConnectionLifetime fallback;
  fallback.idle_timeout = idle_timeout_;
  return fallback;
}

void ConnectionPool::setLifetimes(LifetimeOf lifetime_of) { lifetime_of_ = std::move(lifetime_of); }

void ConnectionPool::countLifetimeEnd(const PoolKey& key, LifetimeEnd why) {
  if (!stats_) return;
  common::Labels labels{{"cluster", key.cluster}};
  if (why == LifetimeEnd::IdleTimeout) {
    stats_->counter("culvert_upstream_cx_idle_timeout_total", labels,
                    "Pooled upstream connections closed after the cluster's idle_timeout")
        .inc();
  } else if (why == LifetimeEnd::MaxDuration) {
    stats_->counter("culvert_upstream_cx_max_duration_reached_total", labels,
                    "Upstream connections closed, not reused, past the cluster's max_connection_duration")
        .inc();
  } else if (why == LifetimeEnd::MaxRequests) {
    stats_->counter("culvert_upstream_cx_max_requests_total", labels,
                    "Upstream connections closed, not reused, after the cluster's max_requests_per_connection")
        .inc();
  } else {
    stats_->counter("culvert_upstream_cx_drain_timeout_total", labels,
                    "Upstream connections to an endpoint that left its cluster, ended busy at the drain timeout")
        .inc();
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
  startLentDrains();
}

size_t ConnectionPool::idleCount() const {
  size_t n = 0;
  for (const auto& [key, list] : idle_) n += list.size();
  return n;
}

}  // namespace culvert::upstream
