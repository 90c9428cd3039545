#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "proxy/common/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/event/dispatcher.h"
#include "proxy/network/connection.h"
#include "proxy/network/socket_hooks.h"

namespace culvert::upstream {

// Tcp connections are never parked for reuse; Http2 ones are multiplexed by Http2Pool.
enum class Protocol { Http1, Tcp, Http2 };

// Connections are pooled per source pod: an upstream socket lives in the pod's netns and
// carries its IP, so it must never be reused for another pod.
struct PoolKey {
  uint64_t pod_id = 0;
  common::SocketAddress endpoint;
  Protocol protocol = Protocol::Http1;
  // A connection counts against its cluster's max_connections for its whole life, so it
  // is reused only within that cluster (Envoy's pools are per cluster too).
  std::string cluster{};
  // config::RoutingPriority: a connection counts against one priority's max_connections,
  // so each priority has its own connections (Envoy's pools are per priority too).
  uint8_t priority = 0;
  friend auto operator<=>(const PoolKey&, const PoolKey&) = default;
};

struct ConnectRequest {
  PoolKey key;  // its endpoint is where a new connection goes
  int netns_fd = -1;  // the source pod's netns; -1 = culvertd's own
  std::chrono::milliseconds connect_timeout{5000};
  // Attached to a new connection for its whole life (the cluster's max_connections unit).
  std::shared_ptr<void> lifetime_token{};
  // Whose work an upstream HTTP/2 connection's reads are (Http2Pool): it carries one
  // source pod's streams, so one tenant's. The weight is the one at connect time. An
  // HTTP/1.1 connection's reads are its exchange's, whose owner gives the share.
  network::WorkShare share{};
};

// An upstream connection being made. Owned by the requester: destroying it cancels.
class PendingConnection {
public:
  virtual ~PendingConnection() = default;
};

// One timer for many deadlines: it fires at the earliest one asked for. Its owner handles
// what is due and asks again for the next; asking for a later deadline costs nothing.
class EarliestDeadline {
public:
  using TimePoint = std::chrono::steady_clock::time_point;
  static constexpr TimePoint kNever = TimePoint::max();
  EarliestDeadline(event::Dispatcher& dispatcher, std::function<void()> on_due);
  void request(TimePoint at);

private:
  event::Dispatcher& dispatcher_;
  std::function<void()> on_due_;
  std::unique_ptr<event::Timer> timer_;
  TimePoint armed_ = kNever;
};

// Why the pool closed a connection (a counter per cluster each).
enum class LifetimeEnd { IdleTimeout, MaxDuration, DrainTimeout, MaxRequests };

class ConnectionPool;

// An HTTP/1.1 connection out of the pool for one exchange (ConnectionPool::lend). The pool
// lists what it lent so that when an endpoint leaves its cluster, connections to it that
// are still busy after the drain timeout can be ended (DESIGN §5). Intrusive: lending
// allocates nothing.
class LentConnection {
public:
  LentConnection() = default;
  LentConnection(const LentConnection&) = delete;
  LentConnection& operator=(const LentConnection&) = delete;

  // The endpoint left its cluster the drain timeout ago and the exchange still runs: the
  // holder closes the connection. Called once, after the pool has let go of the loan.
  virtual void onDrainTimeout() = 0;

protected:
  ~LentConnection();  // gives the loan back

private:
  friend class ConnectionPool;
  ConnectionPool* pool_ = nullptr;  // null: not lent
  const PoolKey* key_ = nullptr;
  LentConnection* prev_ = nullptr;
  LentConnection* next_ = nullptr;
  EarliestDeadline::TimePoint drain_deadline_ = EarliestDeadline::kNever;
};

// One worker's HTTP/1.1 upstream connections: keep-alive reuse, closed after the
// cluster's idle_timeout, never reused past its max_connection_duration or
// max_requests_per_connection.
class ConnectionPool {
public:
  using Ready = std::function<void(common::Result<std::unique_ptr<network::TcpConnection>>)>;

  // `idle_timeout` holds for clusters the lifetime lookup does not know. `stats` (may be
  // null) gets the per-cluster lifetime counters. `drain_timeout`: how long a busy
  // connection to an endpoint that left its cluster may go on before it is ended.
  ConnectionPool(event::Dispatcher& dispatcher, network::SocketTagger* tagger, std::chrono::milliseconds idle_timeout,
                 common::StatsStore* stats = nullptr,
                 std::chrono::milliseconds drain_timeout = std::chrono::seconds(30));
  ~ConnectionPool();

  // Calls `ready` with an idle pooled connection (synchronously) or a new one once
  // connected; the returned handle is null when it was synchronous.
  std::unique_ptr<PendingConnection> acquire(const ConnectRequest& request, Ready ready);
  // Parks a connection whose last exchange ended cleanly for reuse.
  void release(const PoolKey& key, std::unique_ptr<network::TcpConnection> connection);
  // Lists a connection acquired for `key` as busy (`key` must outlive the loan) until
  // giveBack() or the loan's destruction.
  void lend(LentConnection& lent, const PoolKey& key);
  void giveBack(LentConnection& lent);
  // Closes every idle connection of a pod (its netns is going away).
  void drainPod(uint64_t pod_id);
  // Whether (cluster, endpoint) exists in the configuration now; set again after every
  // configuration change. Idle connections to anything else close at once; busy ones
  // close instead of being parked when their exchange ends, or are ended drain_timeout
  // after the change if it still runs (DESIGN §5: an endpoint that leaves its cluster
  // drains). A question, not a copy of every endpoint: the cluster
  // manager answers it from the configuration it already holds (for a LOGICAL_DNS
  // cluster every endpoint stays live: a new address is for new connections only).
  using LiveEndpoint = std::function<bool(std::string_view cluster, const common::SocketAddress& endpoint)>;
  void setLiveEndpoints(LiveEndpoint is_live);
  // Whether the key's endpoint is still in its cluster (keys without a cluster always are).
  bool isLive(const PoolKey& key) const;
  // A cluster's connection lifetime (its common_http_protocol_options); set again after
  // every configuration change, like the live endpoints.
  using LifetimeOf = std::function<config::ConnectionLifetime(std::string_view cluster)>;
  void setLifetimes(LifetimeOf lifetime_of);
  config::ConnectionLifetime lifetimeOf(const PoolKey& key) const;
  // Counts a connection closed for `why` (also for the HTTP/2 pool's connections).
  void countLifetimeEnd(const PoolKey& key, LifetimeEnd why);
  std::chrono::milliseconds drainTimeout() const { return drain_timeout_; }

  // Whether acquire() would reuse a parked connection rather than make one.
  bool hasIdle(const PoolKey& key) const;
  size_t idleCount() const;
  uint64_t connectionsCreated() const { return created_; }

private:
  class Idle;
  void removeIdle(Idle* idle);
  void sweep();
  void closeLater(std::unique_ptr<network::TcpConnection> connection);
  // Starts the drain clock of lent connections whose endpoint is no longer live.
  void startLentDrains();
  // Ends the lent connections whose drain deadline passed; the earliest one still ahead.
  EarliestDeadline::TimePoint endDueLentDrains(EarliestDeadline::TimePoint now);

  event::Dispatcher& dispatcher_;
  network::SocketTagger* tagger_;
  std::chrono::milliseconds idle_timeout_;
  common::StatsStore* stats_;
  std::chrono::milliseconds drain_timeout_;
  LentConnection* lent_ = nullptr;  // head of the lent list
  size_t lent_draining_ = 0;        // lent connections with a drain deadline
  LifetimeOf lifetime_of_;  // empty = idle_timeout_, no maximum
  // Per key, most recently released last. A vector, not a list: with a key's entry kept
  // while it empties (acquire), parking a connection allocates no node.
  std::map<PoolKey, std::vector<std::unique_ptr<Idle>>> idle_;
  uint64_t created_ = 0;
  LiveEndpoint live_;  // empty until the first configuration
  EarliestDeadline sweep_;
};

}  // namespace culvert::upstream
