#pragma once

#include <map>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "proxy/common/owned_list.h"
#include "proxy/common/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/event/dispatcher.h"
#include "proxy/event/scheduler.h"
#include "proxy/router/retry_state.h"
#include "proxy/network/listener.h"
#include "proxy/network/socket_hooks.h"
#include "proxy/server/http1_session.h"
#include "proxy/server/http2_session.h"
#include "proxy/server/listener_index.h"
#include "proxy/server/tcp_proxy_session.h"
#include "proxy/server/pod.h"
#include "proxy/upstream/cluster_manager.h"
#include "proxy/upstream/connection_pool.h"
#include "proxy/upstream/health_checker.h"

namespace culvert::server {

// A configuration as published to the workers: the snapshot parts plus the index built
// from them once on the main thread.
struct PublishedConfig {
  std::shared_ptr<const config::Snapshot> snapshot;
  VirtualListenerIndex virtual_listeners;

  explicit PublishedConfig(std::shared_ptr<const config::Snapshot> s)
      : snapshot(std::move(s)), virtual_listeners(*snapshot->listeners) {}
};

struct WorkerHooks {
  network::SocketTagger* tagger = nullptr;
  network::OriginalDestinationSource* original_destinations = nullptr;
  // Retry circuit breakers, shared by all workers (the Server's); null = the worker's own.
  router::RetryResourceRegistry* retry_resources = nullptr;
  // Circuit-breaker counts, shared by all workers (Envoy's limits are per cluster).
  std::shared_ptr<upstream::ResourceRegistry> resources{};
  // Access-log files (the Server's); null = no access logging.
  accesslog::LogManager* access_logs = nullptr;
  // How long a busy upstream connection to an endpoint that left its cluster may go on
  // before it is ended (bootstrap `drain_timeout`).
  std::chrono::milliseconds drain_timeout{std::chrono::seconds(30)};
};

// One worker thread: its loop, its share of every pod's listener group, the connections
// accepted there, its upstream pools and load-balancer state. Public methods are called
// from the main thread and post to the worker.
class Worker : private Http1Session::Owner {
public:
  Worker(uint32_t index, WorkerHooks hooks, common::StatsStore& stats);
  ~Worker();

  void start();
  void stop();  // joins the thread
  event::Dispatcher& dispatcher() { return dispatcher_; }
  uint32_t index() const { return index_; }

  void publish(std::shared_ptr<const PublishedConfig> config);
  void addPodListener(std::shared_ptr<const Pod> pod, network::FileDescriptor listen_fd);
  void removePod(uint64_t pod_id);
  // A listener bound on a host address (bind_to_port: true), addressed directly.
  void addBoundListener(std::string name, network::FileDescriptor listen_fd);
  void removeBoundListener(std::string name);

private:
  void onAccept(const std::shared_ptr<const Pod>& pod, network::FileDescriptor fd, const common::SocketAddress& peer);
  void onBoundAccept(const std::string& listener_name, network::FileDescriptor fd, const common::SocketAddress& peer);
  // Picks the filter chain (sniffing the first bytes when the listener needs it) and
  // starts the matching session.
  void classify(std::shared_ptr<const Pod> pod, const config::Listener& listener,
                const common::SocketAddress& destination, std::optional<common::SocketAddress> original_destination,
                network::FileDescriptor fd);
  // `from`: the configuration `chain` belongs to (alive during the call).
  void startSession(std::shared_ptr<const Pod> pod, const config::FilterChain* chain, const PublishedConfig* from,
                    std::optional<common::SocketAddress> original_destination,
                    std::unique_ptr<network::TcpConnection> connection, std::string_view initial_bytes);
  // The HTTP/1.1 sessions' settings of a chain: one object per chain of the current
  // configuration, shared by its sessions (a chain of an older one gets its own).
  std::shared_ptr<const Http1Settings> http1Settings(const config::FilterChain& chain, bool current);
  void onSessionDone(Http1Session* session) override;
  class Sniffer;
  friend class Sniffer;
  void finishSniff(Sniffer* sniffer);
  // Starts checks of new or changed clusters with health_checks, stops the others.
  void updateHealthCheckers();

  uint32_t index_;
  WorkerHooks hooks_;
  common::StatsStore& stats_;
  event::Dispatcher dispatcher_;
  std::thread thread_;

  // Worker-thread state.
  event::Scheduler scheduler_;
  upstream::ClusterManager clusters_;
  upstream::ConnectionPool pool_;
  upstream::Http2Pool http2_pool_;
  router::RetryResourceRegistry own_retry_resources_;
  // What sessions borrow from this worker: one copy, referenced by every HTTP/1.1 session.
  WorkerServices services_;
  std::map<std::string, std::unique_ptr<upstream::HealthChecker>> health_checkers_;  // by cluster
  std::shared_ptr<const PublishedConfig> config_;
  struct PodListener {
    std::shared_ptr<const Pod> pod;
    std::unique_ptr<network::TcpListener> listener;
  };
  std::multimap<uint64_t, PodListener> pods_;  // a pod has one per family (127.0.0.1, ::1)
  std::map<std::string, std::unique_ptr<network::TcpListener>> bound_listeners_;
  // Connections to bound listeners come from no enrolled pod: they are charged to the
  // "node" tenant and their upstream sockets live in culvertd's own netns.
  std::shared_ptr<tenant::TenantContext> node_tenant_;
  // The client "pod" of a bound listener's connections, one per (listener, client IP) while
  // any connection holds it, not one per connection. Expired entries go when the map has
  // doubled since the last sweep.
  std::shared_ptr<const Pod> boundClient(const std::string& listener_name, std::string ip);
  std::unordered_map<std::string, std::weak_ptr<const Pod>> bound_clients_;
  size_t bound_clients_swept_at_ = 0;
  std::unordered_map<Sniffer*, std::unique_ptr<Sniffer>> sniffers_;
  common::OwnedList<Http1Session> sessions_;
  // Keyed by chains of config_ only, and cleared when config_ changes.
  std::unordered_map<const config::FilterChain*, std::shared_ptr<const Http1Settings>> http1_settings_;
  common::OwnedList<TcpProxySession> tcp_sessions_;
  common::OwnedList<Http2Session> http2_sessions_;
  common::Counter& no_original_destination_;
  common::Counter& accepted_;  // this worker's accepts, in-pod and bound: how a pod's load spreads
};

}  // namespace culvert::server
