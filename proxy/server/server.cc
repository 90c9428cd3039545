#include "proxy/server/server.h"

namespace culvert::server {

namespace {
constexpr int kBoundListenBacklog = 4096;
}

Server::Server(event::Dispatcher& main, uint32_t workers, WorkerHooks hooks, common::StatsStore& stats) : main_(main) {
  if (hooks.retry_resources == nullptr) hooks.retry_resources = &retry_resources_;
  if (!hooks.resources) hooks.resources = std::make_shared<upstream::ResourceRegistry>();
  access_logs_ = std::make_unique<accesslog::LogManager>(accesslog::LogManager::Options{.shards = workers}, stats);
  if (hooks.access_logs == nullptr) hooks.access_logs = access_logs_.get();
  for (uint32_t i = 0; i < workers; ++i) workers_.push_back(std::make_unique<Worker>(i, hooks, stats));
}

Server::~Server() { stop(); }

void Server::start() {
  for (auto& w : workers_) w->start();
}

void Server::stop() {
  for (auto& w : workers_) w->stop();
}

Server::PublishResult Server::publish(std::shared_ptr<const config::Snapshot> snapshot) {
  PublishResult result;
  auto published = std::make_shared<const PublishedConfig>(snapshot);
  for (auto& w : workers_) w->publish(published);
  result.captured = published->virtual_listeners.capturedDestinations();

  // Bound listeners: close the ones gone or moved, open the new ones. Sockets are made
  // here so a bind error is reported to the configuration's source, not lost on a worker.
  std::map<std::string, common::SocketAddress> wanted;
  for (const auto& [name, listener] : snapshot->listeners->by_name) {
    if (listener->bind_to_port) wanted.emplace(name, listener->address);
  }
  for (auto it = bound_.begin(); it != bound_.end();) {
    auto w = wanted.find(it->first);
    if (w == wanted.end() || !(w->second == it->second)) {
      for (auto& worker : workers_) worker->removeBoundListener(it->first);
      it = bound_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [name, address] : wanted) {
    if (bound_.contains(name)) continue;
    std::vector<network::FileDescriptor> fds;
    common::Result<network::FileDescriptor> fd;
    for (size_t i = 0; i < workers_.size(); ++i) {
      fd = network::createListenSocket(address, kBoundListenBacklog, true);
      if (!fd) break;
      fds.push_back(std::move(*fd));
    }
    if (fds.size() != workers_.size()) {
      result.bind_errors.push_back(common::nest("listener " + name, fd.error()));
      continue;
    }
    for (size_t i = 0; i < workers_.size(); ++i) workers_[i]->addBoundListener(name, std::move(fds[i]));
    bound_.emplace(name, address);
  }
  return result;
}

void Server::addPod(std::shared_ptr<const Pod> pod, std::vector<network::FileDescriptor> listen_fds) {
  // One socket per worker and family: fd i goes to worker i % workers.
  for (size_t i = 0; i < listen_fds.size() && !workers_.empty(); ++i) {
    workers_[i % workers_.size()]->addPodListener(pod, std::move(listen_fds[i]));
  }
}

void Server::removePod(uint64_t pod_id) {
  for (auto& w : workers_) w->removePod(pod_id);
}

void Server::probeWorkers(std::chrono::milliseconds timeout, std::function<void(bool)> done) {
  struct Probe {
    size_t pending;
    bool finished = false;
    std::function<void(bool)> done;
    std::unique_ptr<event::Timer> timer;
  };
  auto probe = std::make_shared<Probe>();
  probe->pending = workers_.size();
  probe->done = std::move(done);
  if (probe->pending == 0) {
    probe->done(true);
    return;
  }
  probe->timer = main_.createTimer([probe] {
    if (probe->finished) return;
    probe->finished = true;
    probe->done(false);
  });
  probe->timer->enable(timeout);
  for (auto& w : workers_) {
    w->dispatcher().post([this, probe, alive = std::weak_ptr<bool>(alive_)] {
      // Answer on the main thread; the Server may be gone by then during shutdown.
      if (!alive.lock()) return;
      main_.post([probe] {
        if (probe->finished || --probe->pending > 0) return;
        probe->finished = true;
        probe->timer->disable();
        probe->done(true);
      });
    });
  }
}

}  // namespace culvert::server
