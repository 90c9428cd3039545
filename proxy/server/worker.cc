#include "proxy/server/worker.h"

#include <spdlog/spdlog.h>

namespace culvert::server {

namespace {
constexpr std::chrono::milliseconds kUpstreamIdleTimeout{60000};
}

Worker::Worker(uint32_t index, WorkerHooks hooks, common::StatsStore& stats)
    : index_(index), hooks_(hooks), stats_(stats), dispatcher_("worker_" + std::to_string(index)),
      pool_(dispatcher_, hooks.tagger, kUpstreamIdleTimeout),
      node_tenant_(tenant::TenantContext::create(0, "node", stats)),
      no_original_destination_(stats.counter("culvert_downstream_cx_no_original_dst_total", {},
                                             "Accepted connections whose original destination was not recorded")) {}

Worker::~Worker() { stop(); }

void Worker::start() {
  thread_ = std::thread([this] {
    dispatcher_.run();
    // Tear down on the worker's own thread: the handles belong to its loop.
    sessions_.clear();
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
    clusters_.update(config_->snapshot->clusters);
  });
}

void Worker::addPodListener(std::shared_ptr<const Pod> pod, network::FileDescriptor listen_fd) {
  auto fd = std::make_shared<network::FileDescriptor>(std::move(listen_fd));
  dispatcher_.post([this, pod = std::move(pod), fd] {
    auto listener = std::make_unique<network::TcpListener>(
        dispatcher_, std::move(*fd), [this, pod](network::FileDescriptor accepted) { onAccept(pod, std::move(accepted)); });
    pods_.emplace(pod->id, PodListener{pod, std::move(listener)});
  });
}

void Worker::removePod(uint64_t pod_id) {
  dispatcher_.post([this, pod_id] {
    pods_.erase(pod_id);
    // The pod is gone: its connections are reset at once, not drained (DESIGN.md §5).
    std::vector<Http1Session*> doomed;
    for (auto& [ptr, session] : sessions_) {
      if (session->pod().id == pod_id) doomed.push_back(ptr);
    }
    for (auto* s : doomed) s->abort();
    pool_.drainPod(pod_id);
  });
}

void Worker::addBoundListener(std::string name, network::FileDescriptor listen_fd) {
  auto fd = std::make_shared<network::FileDescriptor>(std::move(listen_fd));
  dispatcher_.post([this, name = std::move(name), fd] {
    bound_listeners_[name] = std::make_unique<network::TcpListener>(
        dispatcher_, std::move(*fd), [this, name](network::FileDescriptor accepted) { onBoundAccept(name, std::move(accepted)); });
  });
}

void Worker::removeBoundListener(std::string name) {
  // Existing connections stay until they end; only accepting stops.
  dispatcher_.post([this, name = std::move(name)] { bound_listeners_.erase(name); });
}

void Worker::onBoundAccept(const std::string& listener_name, network::FileDescriptor fd) {
  if (!config_) return;
  auto it = config_->snapshot->listeners->by_name.find(listener_name);
  if (it == config_->snapshot->listeners->by_name.end()) return;
  sockaddr_storage local{};
  sockaddr_storage peer{};
  socklen_t local_len = sizeof local;
  socklen_t peer_len = sizeof peer;
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
      getpeername(fd.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) {
    return;
  }
  auto destination = common::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&local));
  const auto* chain = selectFilterChain(*it->second, destination);
  if (chain == nullptr || !chain->http.route_config) {
    node_tenant_->no_filter_chain->inc();
    return;
  }
  auto client = std::make_shared<Pod>();
  client->name = listener_name;
  client->ip = common::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&peer)).ip();
  client->tenant = node_tenant_;
  startSession(std::move(client), *chain, std::move(fd));
}

void Worker::onAccept(const std::shared_ptr<const Pod>& pod, network::FileDescriptor fd) {
  std::optional<common::SocketAddress> destination;
  if (hooks_.original_destinations) destination = hooks_.original_destinations->takeOriginalDestination(fd.get());
  if (!destination) {
    no_original_destination_.inc();
    return;  // fd closes
  }
  const config::FilterChain* chain = nullptr;
  if (config_) {
    if (const auto* listener = config_->virtual_listeners.find(*destination)) {
      chain = selectFilterChain(*listener, *destination);
    }
  }
  if (chain == nullptr || !chain->http.route_config) {
    pod->tenant->no_filter_chain->inc();
    spdlog::debug("pod {}/{}: no listener or filter chain for {}", pod->namespace_name, pod->name, destination->toString());
    return;
  }
  startSession(pod, *chain, std::move(fd));
}

void Worker::startSession(std::shared_ptr<const Pod> pod, const config::FilterChain& chain, network::FileDescriptor fd) {
  auto connection = network::TcpConnection::adopt(dispatcher_, fd.release());
  if (!connection) return;
  auto session = std::make_unique<Http1Session>(
      WorkerServices{dispatcher_, scheduler_, clusters_, pool_}, std::move(pod), chain.http.route_config, std::move(*connection),
      [this](Http1Session* done) {
        auto it = sessions_.find(done);
        if (it == sessions_.end()) return;
        dispatcher_.deferredDelete(std::move(it->second));
        sessions_.erase(it);
      });
  auto* raw = session.get();
  sessions_.emplace(raw, std::move(session));
  raw->start();
}

}  // namespace culvert::server
