#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "proxy/common/owned_list.h"
#include "proxy/config/snapshot.h"
#include "proxy/server/http1_session.h"

namespace culvert::server {

// envoy.filters.network.tcp_proxy: one downstream connection, one upstream connection to
// an endpoint of the chain's cluster (or the original destination for ORIGINAL_DST), bytes
// both ways with back-pressure, half-close passed on, and an idle timeout.
class TcpProxySession : public common::ListHook {
public:
  using OnDone = std::function<void(TcpProxySession*)>;

  TcpProxySession(WorkerServices services, std::shared_ptr<const Pod> pod, config::TcpProxy config,
                  std::optional<common::SocketAddress> original_destination,
                  std::unique_ptr<network::TcpConnection> downstream, OnDone on_done);
  ~TcpProxySession();

  // Starts connecting upstream; `initial_bytes` were read while sniffing.
  void start(std::string_view initial_bytes);
  const Pod& pod() const { return *pod_; }
  void abort() { close(); }

private:
  class Side;

  void onUpstreamReady(common::Result<std::unique_ptr<network::TcpConnection>> connection);
  void onSideData(Side& from, std::string_view data);
  void onSideEof(Side& from);
  void updateReading();
  // As Http2Session's: over the tenant's share, neither side reads until the next round.
  void pauseIfOverShare();
  void touch();
  void close();

  WorkerServices services_;
  std::shared_ptr<const Pod> pod_;
  config::TcpProxy config_;
  std::optional<common::SocketAddress> original_destination_;
  OnDone on_done_;
  std::unique_ptr<Side> downstream_;
  std::unique_ptr<Side> upstream_;
  std::unique_ptr<upstream::PendingConnection> connecting_;
  std::string pending_upstream_;  // downstream bytes read before the upstream was up
  std::unique_ptr<event::Timer> idle_timer_;
  std::unique_ptr<event::Scheduler::Pause> share_pause_;
  bool closed_ = false;
  // Access log: one record per connection, logged when it closes.
  accesslog::SessionLogs access_logs_;
  accesslog::StreamInfo log_;
};

}  // namespace culvert::server
