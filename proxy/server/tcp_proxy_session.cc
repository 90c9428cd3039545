#include "proxy/server/tcp_proxy_session.h"

#include <spdlog/spdlog.h>

#include "proxy/server/tenant_share.h"

namespace culvert::server {

namespace {
// A side stops reading while the other side has this much queued in user space.
constexpr size_t kWriteHighWatermark = 256 * 1024;
constexpr size_t kPendingLimit = 64 * 1024;
}  // namespace

// One connection of the pair and what it has seen.
class TcpProxySession::Side : public network::ConnectionCallbacks {
public:
  Side(TcpProxySession& session, std::unique_ptr<network::TcpConnection> connection)
      : session_(session), connection_(std::move(connection)) {
    connection_->setCallbacks(this);
  }
  void onData(std::string_view data) override { session_.onSideData(*this, data); }
  void onClose(network::CloseReason reason) override {
    if (reason == network::CloseReason::RemoteClose) {
      eof_ = true;
      session_.onSideEof(*this);
    } else {
      session_.close();
    }
  }
  void onWriteDrained() override { session_.updateReading(); }
  // Both sides' writes are the pod's tenant's work (the upstream one is never pooled).
  network::WorkShare writeShare() const override {
    return tenantShare(session_.services_.scheduler, *session_.pod_->tenant);
  }
  network::WorkShare readShare() const override { return writeShare(); }

  network::TcpConnection& connection() { return *connection_; }
  bool eof() const { return eof_; }

private:
  TcpProxySession& session_;
  std::unique_ptr<network::TcpConnection> connection_;
  bool eof_ = false;
};

TcpProxySession::TcpProxySession(WorkerServices services, std::shared_ptr<const Pod> pod, config::TcpProxy config,
                                 std::optional<common::SocketAddress> original_destination,
                                 std::unique_ptr<network::TcpConnection> downstream, OnDone on_done)
    : services_(services), pod_(std::move(pod)), config_(std::move(config)),
      original_destination_(std::move(original_destination)), on_done_(std::move(on_done)),
      downstream_(std::make_unique<Side>(*this, std::move(downstream))) {
  pod_->tenant->downstream_cx_total->inc();
  pod_->tenant->downstream_cx_active->add(1);
  access_logs_ = accesslog::SessionLogs(config_.access_logs, services_.access_logs, services_.worker_index);
  if (access_logs_.enabled()) {
    beginRecord(log_, connectionLogFacts(downstream_->connection().fd(), *pod_, original_destination_), *pod_, "",
                services_.dispatcher.now());
    log_.upstream_cluster = config_.cluster;
  }
  if (config_.idle_timeout.count() > 0) {
    idle_timer_ = services_.dispatcher.createTimer([this] {
      spdlog::debug("pod {}/{}: tcp_proxy {} idle timeout", pod_->namespace_name, pod_->name, config_.stat_prefix);
      log_.fail(accesslog::ResponseFlag::StreamIdleTimeout, "idle_timeout");
      close();
    });
  }
}

TcpProxySession::~TcpProxySession() {
  pod_->tenant->downstream_cx_active->add(-1);
  pod_->tenant->budget.releaseConnection();
}

void TcpProxySession::start(std::string_view initial_bytes) {
  pending_upstream_.assign(initial_bytes);
  touch();
  auto selection = services_.clusters.pickEndpoint(config_.cluster, {.hash = std::nullopt, .count_request = false});
  std::optional<common::SocketAddress> endpoint;
  if (selection) {
    endpoint = selection->original_destination ? original_destination_
                                               : std::optional<common::SocketAddress>(selection->endpoint.address);
  }
  if (!endpoint) {
    spdlog::debug("pod {}/{}: tcp_proxy {}: no upstream for cluster {}", pod_->namespace_name, pod_->name,
                  config_.stat_prefix, config_.cluster);
    pod_->tenant->upstream_cx_connect_fail->inc();
    log_.fail(accesslog::ResponseFlag::NoHealthyUpstream, "no_healthy_upstream");
    close();
    return;
  }
  log_.upstream_host = *endpoint;
  ++log_.attempt_count;
  upstream::ConnectRequest request{{pod_->id, *endpoint, upstream::Protocol::Tcp},
                                   pod_->netnsFd(),
                                   selection->cluster->connect_timeout};
  // Read while connecting (bounded), so a client that goes away is noticed.
  downstream_->connection().readEnable(true);
  connecting_ = services_.pool.acquire(request, [this](auto result) { onUpstreamReady(std::move(result)); });
}

void TcpProxySession::onUpstreamReady(common::Result<std::unique_ptr<network::TcpConnection>> connection) {
  connecting_.reset();
  if (!connection) {
    pod_->tenant->upstream_cx_connect_fail->inc();
    spdlog::debug("pod {}/{}: tcp_proxy {}: {}", pod_->namespace_name, pod_->name, config_.stat_prefix,
                  connection.error().describe());
    log_.upstream_transport_failure_reason = connection.error().describe();
    log_.fail(accesslog::ResponseFlag::UpstreamConnectionFailure, "connection_failure");
    close();
    return;
  }
  upstream_ = std::make_unique<Side>(*this, std::move(*connection));
  upstream_->connection().write(pending_upstream_);
  pending_upstream_.clear();
  pending_upstream_.shrink_to_fit();
  if (downstream_->eof()) upstream_->connection().shutdownWrite();
  updateReading();
}

void TcpProxySession::onSideData(Side& from, std::string_view data) {
  touch();
  (&from == downstream_.get() ? log_.bytes_received : log_.bytes_sent) += data.size();
  services_.scheduler.run(pod_->tenant->id, pod_->tenant->weight.load(std::memory_order_relaxed), [&] {
    if (&from == downstream_.get()) {
      if (upstream_) {
        upstream_->connection().write(data);
      } else {
        pending_upstream_.append(data);
      }
    } else {
      downstream_->connection().write(data);
    }
    updateReading();
  });
  pauseIfOverShare();
}

void TcpProxySession::pauseIfOverShare() {
  if (closed_ || share_pause_ || !services_.scheduler.overShare(pod_->tenant->id)) return;
  share_pause_ = services_.scheduler.pause(pod_->tenant->id, [this] {
    share_pause_.reset();
    updateReading();
  });
  pod_->tenant->share_paused->inc();
  updateReading();
}

void TcpProxySession::onSideEof(Side& from) {
  // Pass the half-close on (after what is queued); done once both directions ended.
  Side* other = &from == downstream_.get() ? upstream_.get() : downstream_.get();
  if (other) other->connection().shutdownWrite();
  if (downstream_->eof() && upstream_ && upstream_->eof()) close();
}

void TcpProxySession::updateReading() {
  if (closed_) return;
  bool paused = share_pause_ != nullptr;
  bool down_blocked = paused || (upstream_ ? upstream_->connection().queuedWriteBytes() > kWriteHighWatermark
                                           : pending_upstream_.size() > kPendingLimit);
  if (!downstream_->eof()) downstream_->connection().readEnable(!down_blocked);
  if (upstream_ && !upstream_->eof()) {
    upstream_->connection().readEnable(!paused &&
                                       downstream_->connection().queuedWriteBytes() <= kWriteHighWatermark);
  }
}

void TcpProxySession::touch() {
  if (idle_timer_) idle_timer_->enable(config_.idle_timeout);
}

void TcpProxySession::close() {
  if (closed_) return;
  closed_ = true;
  connecting_.reset();
  idle_timer_.reset();
  share_pause_.reset();
  if (access_logs_.enabled()) {
    log_.end = services_.dispatcher.now();
    access_logs_.log(log_);
  }
  downstream_->connection().close();
  if (upstream_) upstream_->connection().close();
  if (on_done_) on_done_(this);
}

}  // namespace culvert::server
