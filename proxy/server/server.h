#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <memory>
#include <vector>

#include "proxy/accesslog/log_file.h"
#include "proxy/server/worker.h"

namespace culvert::server {

// The data path: N workers, fed configuration and pods by the main thread.
class Server {
public:
  Server(event::Dispatcher& main, uint32_t workers, WorkerHooks hooks, common::StatsStore& stats);
  ~Server();

  void start();
  void stop();
  size_t workerCount() const { return workers_.size(); }

  struct PublishResult {
    std::vector<common::SocketAddress> captured;  // what the BPF captured-destination set holds
    std::vector<common::Error> bind_errors;       // bound listeners that could not bind
  };
  // Publishes a configuration to every worker and (re)binds the bound listeners
  // (bind_to_port: true) whose name or address changed, one SO_REUSEPORT socket per worker.
  PublishResult publish(std::shared_ptr<const config::Snapshot> snapshot);
  // One listen socket per worker, in worker order (the pod's SO_REUSEPORT group).
  void addPod(std::shared_ptr<const Pod> pod, std::vector<network::FileDescriptor> listen_fds);
  void removePod(uint64_t pod_id);

  // Posts a probe to every worker; `done(true)` on the main thread once all answered
  // within `timeout`, `done(false)` otherwise. Proves the loops turn.
  void probeWorkers(std::chrono::milliseconds timeout, std::function<void(bool)> done);
  // The access-log files and their writer thread (SIGUSR1 reopens them).
  accesslog::LogManager& accessLogs() { return *access_logs_; }

private:
  event::Dispatcher& main_;
  // Bound listeners currently open, by name, with the address they are bound to.
  std::map<std::string, common::SocketAddress> bound_;
  router::RetryResourceRegistry retry_resources_;  // outlives the workers that use it
  std::unique_ptr<accesslog::LogManager> access_logs_;  // outlives the workers too
  std::vector<std::unique_ptr<Worker>> workers_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace culvert::server
