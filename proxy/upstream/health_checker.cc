#include "proxy/upstream/health_checker.h"

#include <charconv>

#include <spdlog/spdlog.h>

#include "proxy/network/connection.h"
#include "proxy/network/socket.h"

namespace culvert::upstream {

bool HealthTracker::record(bool success) {
  bool was = healthy_;
  if (first_) {
    first_ = false;
    healthy_ = success;
  } else if (success) {
    failures_ = 0;
    if (!healthy_ && ++successes_ >= healthy_threshold_) healthy_ = true;
  } else {
    successes_ = 0;
    if (healthy_ && ++failures_ >= unhealthy_threshold_) healthy_ = false;
  }
  if (healthy_ != was) {
    successes_ = 0;
    failures_ = 0;
  }
  return healthy_ != was;
}

std::string healthCheckRequest(const config::HealthCheck& check, std::string_view cluster_name) {
  std::string host = check.host.empty() ? std::string(cluster_name) : check.host;
  return "GET " + check.path + " HTTP/1.1\r\nHost: " + host +
         "\r\nUser-Agent: Envoy/HC\r\nConnection: close\r\n\r\n";
}

std::optional<uint32_t> responseStatus(std::string_view bytes) {
  auto eol = bytes.find("\r\n");
  if (eol == std::string_view::npos) return std::nullopt;
  std::string_view line = bytes.substr(0, eol);
  if (!line.starts_with("HTTP/1.") || line.size() < 12 || line[8] != ' ') return 0;  // 0: malformed
  uint32_t status = 0;
  auto r = std::from_chars(line.data() + 9, line.data() + 12, status);
  if (r.ec != std::errc() || r.ptr != line.data() + 12) return 0;
  return status;
}

bool expectedStatus(const config::HealthCheck& check, uint32_t status) {
  for (const auto& [start, end] : check.expected_statuses) {
    if (status >= start && status < end) return true;
  }
  return false;
}

// One endpoint's checks: a timer for the next check, a connection and a timeout timer
// while one runs.
class HealthChecker::Probe : public network::ConnectionCallbacks {
public:
  Probe(HealthChecker& owner, uint32_t index, Random random, OnChange& on_change)
      : owner_(owner), index_(index), random_(std::move(random)), on_change_(on_change),
        tracker_(owner.cluster_->health_check->healthy_threshold, owner.cluster_->health_check->unhealthy_threshold),
        next_(owner.dispatcher_.createTimer([this] { start(); })),
        timeout_(owner.dispatcher_.createTimer([this] { finish(false); })) {
    // The first check soon, spread over the interval so a big cluster is not probed at once.
    const auto& hc = *owner_.cluster_->health_check;
    next_->enable(std::chrono::milliseconds(random_() % std::max<int64_t>(1, std::min<int64_t>(hc.interval.count(), 100))));
  }
  ~Probe() override {
    if (connection_) connection_->close();
  }

  void onData(std::string_view data) override {
    response_.append(data);
    auto status = responseStatus(response_);
    if (status) finish(*status != 0 && expectedStatus(*owner_.cluster_->health_check, *status));
    else if (response_.size() > 4096) finish(false);
  }
  void onClose(network::CloseReason) override { finish(false); }

private:
  void start() {
    const auto& hc = *owner_.cluster_->health_check;
    const auto& address = owner_.cluster_->endpoints[index_].address;
    response_.clear();
    timeout_->enable(hc.timeout);
    auto fd = network::createTcpSocketInNetns(-1, address.family());
    if (!fd) return finish(false);
    auto conn = network::TcpConnection::adopt(owner_.dispatcher_, fd->release());
    if (!conn) return finish(false);
    connection_ = std::move(*conn);
    connection_->setCallbacks(this);
    connection_->connect(address, [this](int status) {
      if (status != 0) return finish(false);
      const auto& check = *owner_.cluster_->health_check;
      if (check.kind == config::HealthCheck::Kind::Tcp) return finish(true);
      connection_->readEnable(true);
      connection_->write(healthCheckRequest(check, owner_.cluster_->name));
    });
  }

  void finish(bool success) {
    if (done_guard_) return;
    done_guard_ = true;
    timeout_->disable();
    if (connection_) {
      connection_->setCallbacks(nullptr);
      connection_->close();
      // Called from the connection's own callbacks: free it later.
      owner_.dispatcher_.deferredDelete(std::move(connection_));
    }
    if (tracker_.record(success)) {
      spdlog::info("cluster {}: health check marks {} {}", owner_.cluster_->name,
                   owner_.cluster_->endpoints[index_].address.toString(), tracker_.healthy() ? "healthy" : "unhealthy");
      on_change_(index_, tracker_.healthy());
    }
    const auto& hc = *owner_.cluster_->health_check;
    auto jitter = hc.interval_jitter.count() > 0 ? std::chrono::milliseconds(random_() % hc.interval_jitter.count())
                                                 : std::chrono::milliseconds(0);
    next_->enable(hc.interval + jitter);
    done_guard_ = false;
  }

  HealthChecker& owner_;
  uint32_t index_;
  Random random_;
  OnChange& on_change_;
  HealthTracker tracker_;
  std::unique_ptr<event::Timer> next_;
  std::unique_ptr<event::Timer> timeout_;
  std::unique_ptr<network::TcpConnection> connection_;
  std::string response_;
  bool done_guard_ = false;
};

HealthChecker::HealthChecker(event::Dispatcher& dispatcher, std::shared_ptr<const config::Cluster> cluster,
                             Random random, OnChange on_change)
    : dispatcher_(dispatcher), cluster_(std::move(cluster)), on_change_(std::move(on_change)) {
  for (uint32_t i = 0; i < cluster_->endpoints.size(); ++i) {
    probes_.push_back(std::make_unique<Probe>(*this, i, random, on_change_));
  }
}

HealthChecker::~HealthChecker() = default;

}  // namespace culvert::upstream
