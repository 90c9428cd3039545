#include "proxy/server/worker.h"

#include <pthread.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

namespace culvert::server {

namespace {
// For connections of no cluster; a cluster's own idle_timeout defaults to Envoy's 1 h.
constexpr std::chrono::milliseconds kUpstreamIdleTimeout{std::chrono::hours(1)};
// How long a connection may stay silent before the sniffer decides it is a server-first
// protocol (the client waits for the server to speak): the delay such a protocol pays
// on listeners that need sniffing.
constexpr std::chrono::milliseconds kSniffTimeout{100};

void resetAndClose(network::FileDescriptor fd) {
  linger reset{1, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
}  // fd closes here

// Resets a pod's sessions. Collected first: abort() takes a session out of its list.
template <class Session>
void abortPodSessions(common::OwnedList<Session>& sessions, uint64_t pod_id) {
  std::vector<Session*> doomed;
  sessions.forEach([&](Session& session) {
    if (session.pod().id == pod_id) doomed.push_back(&session);
  });
  for (Session* session : doomed) session->abort();
}
}

Worker::Worker(uint32_t index, WorkerHooks hooks, common::StatsStore& stats)
    : index_(index), hooks_(hooks), stats_(stats), dispatcher_("worker_" + std::to_string(index)),
      scheduler_(&dispatcher_),
      clusters_(upstream::ClusterManager::Options{&stats, hooks.resources, {}, [this] { return dispatcher_.now(); }}),
      pool_(dispatcher_, hooks.tagger, kUpstreamIdleTimeout, &stats, hooks.drain_timeout),
      http2_pool_(dispatcher_, pool_, stats),
      services_{stats_,        dispatcher_, scheduler_, clusters_, pool_,
                hooks.retry_resources ? *hooks.retry_resources : own_retry_resources_, &http2_pool_,
                hooks.access_logs, index},
      node_tenant_(tenant::TenantContext::create(0, "node", stats)),
      no_original_destination_(stats.counter("culvert_downstream_cx_no_original_dst_total", {},
                                             "Accepted connections whose original destination was not recorded")),
      accepted_(stats.counter("culvert_worker_downstream_cx_total", {{"worker", std::to_string(index)}},
                              "Connections this worker accepted (in-pod and bound listeners)")) {}

Worker::~Worker() { stop(); }

void Worker::start() {
  thread_ = std::thread([this] {
    // "worker-N", as `ps -L`, top -H and perf show it (15 characters at most).
    pthread_setname_np(pthread_self(), ("worker-" + std::to_string(index_)).substr(0, 15).c_str());
    dispatcher_.run();
    // Tear down on the worker's own thread: the handles belong to its loop.
    sniffers_.clear();
    sessions_.clear();
    http2_sessions_.clear();
    tcp_sessions_.clear();
    health_checkers_.clear();
    pods_.clear();
    bound_listeners_.clear();
  });
}

void Worker::stop() {
  if (!thread_.joinable()) return;
  dispatcher_.exit();
  thread_.join();
}

void Worker::publish(std::shared_ptr<const PublishedConfig> config) {
  dispatcher_.post([this, config = std::move(config)] {
    config_ = config;
    http1_settings_.clear();
    clusters_.update(config_->snapshot->clusters);
    updateHealthCheckers();
    pool_.setLiveEndpoints([this](std::string_view cluster, const common::SocketAddress& endpoint) {
      return clusters_.hasEndpoint(cluster, endpoint);
    });
    pool_.setLifetimes([this](std::string_view cluster) { return clusters_.connectionLifetime(cluster); });
    http2_pool_.drainDeadEndpoints();
  });
}

void Worker::updateHealthCheckers() {
  std::map<std::string, std::unique_ptr<upstream::HealthChecker>> next;
  for (const auto& [name, cluster] : config_->snapshot->clusters->by_name) {
    if (!cluster->health_check || cluster->endpoints.empty()) continue;
    auto it = health_checkers_.find(name);
    if (it != health_checkers_.end() && it->second->cluster() == cluster) {
      next[name] = std::move(it->second);
      continue;
    }
    next[name] = std::make_unique<upstream::HealthChecker>(
        dispatcher_, cluster, upstream::defaultRandom(), [this, cluster](uint32_t index, bool healthy) {
          clusters_.setHealthCheckResult(cluster->name, cluster->endpoints[index].address, healthy);
        });
  }
  health_checkers_ = std::move(next);
}

void Worker::addPodListener(std::shared_ptr<const Pod> pod, network::FileDescriptor listen_fd) {
  auto fd = std::make_shared<network::FileDescriptor>(std::move(listen_fd));
  dispatcher_.post([this, pod = std::move(pod), fd] {
    auto listener = std::make_unique<network::TcpListener>(
        dispatcher_, std::move(*fd), [this, pod](network::FileDescriptor accepted, const common::SocketAddress& peer) {
          onAccept(pod, std::move(accepted), peer);
        });
    pods_.emplace(pod->id, PodListener{pod, std::move(listener)});
  });
}

void Worker::removePod(uint64_t pod_id) {
  dispatcher_.post([this, pod_id] {
    pods_.erase(pod_id);
    // The pod is gone: its connections are reset at once, not drained (DESIGN.md §5).
    abortPodSessions(sessions_, pod_id);
    abortPodSessions(tcp_sessions_, pod_id);
    abortPodSessions(http2_sessions_, pod_id);
    pool_.drainPod(pod_id);
    http2_pool_.drainPod(pod_id);
  });
}

void Worker::addBoundListener(std::string name, network::FileDescriptor listen_fd) {
  auto fd = std::make_shared<network::FileDescriptor>(std::move(listen_fd));
  dispatcher_.post([this, name = std::move(name), fd] {
    bound_listeners_[name] = std::make_unique<network::TcpListener>(
        dispatcher_, std::move(*fd), [this, name](network::FileDescriptor accepted, const common::SocketAddress& peer) {
          onBoundAccept(name, std::move(accepted), peer);
        });
  });
}

void Worker::removeBoundListener(std::string name) {
  // Existing connections stay until they end; only accepting stops.
  dispatcher_.post([this, name = std::move(name)] { bound_listeners_.erase(name); });
}

void Worker::onBoundAccept(const std::string& listener_name, network::FileDescriptor fd,
                           const common::SocketAddress& peer) {
  accepted_.inc();
  if (!config_) return;
  auto it = config_->snapshot->listeners->by_name.find(listener_name);
  if (it == config_->snapshot->listeners->by_name.end()) return;
  sockaddr_storage local{};
  socklen_t local_len = sizeof local;
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &local_len) != 0) return;
  auto client = boundClient(listener_name, peer.ip());
  client->tenant->budget.tryAcquireConnection();  // the node tenant has no limits; sessions release
  // A bound listener has no original destination: ORIGINAL_DST clusters get none.
  classify(std::move(client), *it->second, common::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&local)),
           std::nullopt, std::move(fd));
}

std::shared_ptr<const Pod> Worker::boundClient(const std::string& listener_name, std::string ip) {
  std::string key = listener_name;
  key.push_back('\0');
  key += ip;
  auto& slot = bound_clients_[key];
  if (auto pod = slot.lock()) return pod;
  auto pod = std::make_shared<Pod>();
  pod->name = listener_name;
  pod->ip = std::move(ip);
  pod->tenant = node_tenant_;
  slot = pod;
  if (bound_clients_.size() > 2 * bound_clients_swept_at_ + 16) {
    std::erase_if(bound_clients_, [](const auto& entry) { return entry.second.expired(); });
    bound_clients_swept_at_ = bound_clients_.size();
  }
  return pod;
}

void Worker::onAccept(const std::shared_ptr<const Pod>& pod, network::FileDescriptor fd,
                      const common::SocketAddress& peer) {
  accepted_.inc();
  std::optional<common::SocketAddress> destination;
  // The in-pod listener is in the pod's netns, so the accepted socket is too: its cookie
  // is the pod's id (no SO_NETNS_COOKIE call per connection).
  if (hooks_.original_destinations) destination = hooks_.original_destinations->takeOriginalDestination(pod->id, peer);
  if (!destination) {
    no_original_destination_.inc();
    return;  // fd closes
  }
  const config::Listener* listener = config_ ? config_->virtual_listeners.find(*destination) : nullptr;
  if (listener == nullptr) {
    pod->tenant->no_filter_chain->inc();
    spdlog::debug("pod {}/{}: no listener for {}", pod->namespace_name, pod->name, destination->toString());
    return;
  }
  if (!pod->tenant->allowsListener(listener->name)) {
    // Out of the tenant's scope: as if no listener matched.
    pod->tenant->no_filter_chain->inc();
    return;
  }
  if (!pod->tenant->budget.tryAcquireConnection()) {
    // Over the tenant's connection budget: reset at once (RST, not FIN), so the client
    // fails fast instead of waiting on a connection that will never be served.
    pod->tenant->countShed(tenant::Budget::Connections);
    resetAndClose(std::move(fd));
    return;
  }
  classify(pod, *listener, *destination, destination, std::move(fd));
}

// Reads a connection's first bytes until the sniffer can tell TLS (and its SNI), HTTP or
// something else, or until the sniff timeout (a server-first protocol sends nothing).
class Worker::Sniffer : public network::ConnectionCallbacks {
public:
  Sniffer(Worker& worker, std::shared_ptr<const Pod> pod, std::shared_ptr<const PublishedConfig> config,
          const config::Listener& listener, common::SocketAddress destination,
          std::optional<common::SocketAddress> original_destination, std::unique_ptr<network::TcpConnection> connection,
          bool http_only)
      : worker_(worker), pod_(std::move(pod)), config_(std::move(config)), listener_(listener),
        destination_(destination), original_destination_(std::move(original_destination)),
        connection_(std::move(connection)) {
    connection_->setCallbacks(this);
    connection_->readEnable(true);
    // Only HTTP/1.1 vs HTTP/2 to tell: the client speaks first, so no timeout.
    if (http_only) return;
    timer_ = worker.dispatcher_.createTimer([this] { decide(network::sniff(bytes_), true); });
    timer_->enable(kSniffTimeout);
  }
  void onData(std::string_view data) override {
    bytes_.append(data);
    auto result = network::sniff(bytes_);
    if (result.state == network::SniffResult::State::Done || bytes_.size() >= network::kMaxSniffBytes) {
      decide(result, false);
    }
  }
  void onClose(network::CloseReason) override {
    pod_->tenant->budget.releaseConnection();  // no session will release it
    worker_.finishSniff(this);
  }

private:
  void decide(network::SniffResult result, bool timed_out) {
    if (timer_) timer_->disable();
    connection_->readEnable(false);
    connection_->setCallbacks(nullptr);
    // Nothing said within the timeout: a server-first protocol, never HTTP.
    if (timed_out && bytes_.empty()) result.http = false;
    const auto* chain = selectFilterChain(listener_, destination_, &result);
    worker_.startSession(pod_, chain, config_.get(), original_destination_, std::move(connection_), bytes_);
    worker_.finishSniff(this);
  }

  Worker& worker_;
  std::shared_ptr<const Pod> pod_;
  std::shared_ptr<const PublishedConfig> config_;  // keeps listener_ alive
  const config::Listener& listener_;
  common::SocketAddress destination_;
  std::optional<common::SocketAddress> original_destination_;
  std::unique_ptr<network::TcpConnection> connection_;
  std::string bytes_;
  std::unique_ptr<event::Timer> timer_;
};

void Worker::classify(std::shared_ptr<const Pod> pod, const config::Listener& listener,
                      const common::SocketAddress& destination, std::optional<common::SocketAddress> original_destination,
                      network::FileDescriptor fd) {
  auto connection = network::TcpConnection::adopt(dispatcher_, fd.release());
  if (!connection) {
    pod->tenant->budget.releaseConnection();
    return;
  }
  bool http_only = false;
  if (!needsSniffing(listener)) {
    const auto* chain = selectFilterChain(listener, destination);
    // codec_type AUTO: the first bytes tell HTTP/1.1 from HTTP/2.
    http_only = chain != nullptr && chain->isHttp() &&
                chain->http.codec_type == config::HttpConnectionManager::CodecType::Auto;
    if (!http_only) {
      startSession(std::move(pod), chain, config_.get(), std::move(original_destination), std::move(*connection), {});
      return;
    }
  }
  auto sniffer = std::make_unique<Sniffer>(*this, std::move(pod), config_, listener, destination,
                                           std::move(original_destination), std::move(*connection), http_only);
  auto* raw = sniffer.get();
  sniffers_.emplace(raw, std::move(sniffer));
}

void Worker::finishSniff(Sniffer* sniffer) {
  auto it = sniffers_.find(sniffer);
  if (it == sniffers_.end()) return;
  dispatcher_.deferredDelete(std::move(it->second));
  sniffers_.erase(it);
}

void Worker::startSession(std::shared_ptr<const Pod> pod, const config::FilterChain* chain,
                          const PublishedConfig* from, std::optional<common::SocketAddress> original_destination,
                          std::unique_ptr<network::TcpConnection> connection, std::string_view initial_bytes) {
  if (chain != nullptr && chain->isHttp() && !pod->tenant->allowsRoute(chain->http.route_config->name)) {
    chain = nullptr;  // the chain's routes are out of the tenant's scope
  }
  if (chain == nullptr) {
    pod->tenant->budget.releaseConnection();
    pod->tenant->no_filter_chain->inc();
    spdlog::debug("pod {}/{}: no filter chain matched", pod->namespace_name, pod->name);
    return;  // the connection closes
  }
  WorkerServices& services = services_;
  if (chain->tcp_proxy) {
    auto session = std::make_unique<TcpProxySession>(
        services, std::move(pod), *chain->tcp_proxy, std::move(original_destination), std::move(connection),
        [this](TcpProxySession* done) {
          if (auto owned = tcp_sessions_.remove(done)) dispatcher_.deferredDelete(std::move(owned));
        });
    tcp_sessions_.add(std::move(session))->start(initial_bytes);
    return;
  }
  using CodecType = config::HttpConnectionManager::CodecType;
  if (chain->http.codec_type == CodecType::Http2 ||
      (chain->http.codec_type == CodecType::Auto && network::startsWithHttp2Preface(initial_bytes))) {
    auto session = std::make_unique<Http2Session>(services, std::move(pod), chain->http.route_config,
                                                  std::move(connection), [this](Http2Session* done) {
                                                    if (auto owned = http2_sessions_.remove(done)) {
                                                      dispatcher_.deferredDelete(std::move(owned));
                                                    }
                                                  });
    session->setOriginalDestination(std::move(original_destination));
    session->setStreamTimeouts(chain->http.timeouts);
    session->setAccessLogs(accesslog::SessionLogs(chain->http.access_logs, services.access_logs, index_));
    session->setConnectionLifetime(chain->http.connection_lifetime, chain->http.drain_timeout);
    http2_sessions_.add(std::move(session))->start(initial_bytes);
    return;
  }
  auto session = std::make_unique<Http1Session>(services, std::move(pod), http1Settings(*chain, from == config_.get()),
                                                std::move(connection), static_cast<Http1Session::Owner&>(*this));
  session->setOriginalDestination(std::move(original_destination));
  sessions_.add(std::move(session))->start(initial_bytes);
}

void Worker::onSessionDone(Http1Session* done) {
  if (auto owned = sessions_.remove(done)) dispatcher_.deferredDelete(std::move(owned));
}

std::shared_ptr<const Http1Settings> Worker::http1Settings(const config::FilterChain& chain, bool current) {
  if (current) {
    if (auto it = http1_settings_.find(&chain); it != http1_settings_.end()) return it->second;
  }
  auto settings = std::make_shared<Http1Settings>();
  settings->routes = chain.http.route_config;
  settings->stream_timeouts = chain.http.timeouts;
  settings->lifetime = chain.http.connection_lifetime;
  settings->upgrade_configs = chain.http.upgrade_configs;
  settings->access_logs = accesslog::SessionLogs(chain.http.access_logs, services_.access_logs, index_);
  if (current) http1_settings_.emplace(&chain, settings);
  return settings;
}

}  // namespace culvert::server
