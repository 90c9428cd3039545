#pragma once

// The State-of-the-World ADS client: one gRPC stream (GrpcStream) to the control plane,
// the subscription state machine (AdsState), reconnection with jittered, capped
// exponential back-off, and the durable last-good store. Runs on the main Dispatcher;
// every accepted change is handed to `publish` as a whole Snapshot (the same path the
// resource files take).

#include <array>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "proxy/common/error.h"
#include "proxy/common/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/event/dispatcher.h"
#include "xds/client/ads_state.h"
#include "xds/client/grpc_stream.h"
#include "xds/client/last_good_writer.h"

namespace google::protobuf {
class Message;
}

namespace culvert::xds::client {

inline constexpr std::string_view kStreamAggregatedResourcesPath =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
inline constexpr std::string_view kDeltaAggregatedResourcesPath =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

// Node.client_features: only what culvert's behaviour makes true. It rejects
// ClusterLoadAssignment.policy, so a control plane's overprovisioning_factor is never
// applied (priority failover uses Envoy's fixed default, 1.4; docs/xds-support.md).
inline constexpr std::array<std::string_view, 1> kClientFeatures = {"envoy.lb.does_not_support_overprovisioning"};

struct AdsClientOptions {
  std::string address;  // host:port or unix:PATH
  std::shared_ptr<const tls::ClientContext> tls;  // null = plaintext
  std::string node_id;
  std::string node_cluster;
  bool delta = false;  // DeltaAggregatedResources instead of State of the World
  std::string locality_region, locality_zone, locality_sub_zone;
  std::map<std::string, std::string> node_metadata;  // Node.metadata, string values
  // Last accepted resources, written atomically after every accepted change (on a thread
  // of its own: LastGoodWriter); empty = off.
  std::filesystem::path state_file;
  // A stored configuration older than this is not served at start.
  std::chrono::seconds max_stale{std::chrono::hours(24)};
  std::chrono::milliseconds backoff_base{500};
  std::chrono::milliseconds backoff_cap{30000};
  std::chrono::milliseconds keepalive_interval{30000};
  std::chrono::milliseconds keepalive_timeout{10000};
  // Envoy's default initial_fetch_timeout: an RDS/EDS name unanswered this long stops
  // holding its listener/cluster back.
  std::chrono::milliseconds initial_fetch_timeout{15000};
};

// The delay before reconnect attempt `attempt` (0-based): min(cap, base * 2^attempt),
// scaled by a jitter factor in [0.5, 1.0] drawn from `unit` in [0, 1).
std::chrono::milliseconds backoffDelay(uint32_t attempt, std::chrono::milliseconds base,
                                       std::chrono::milliseconds cap, double unit);

// The durable store's file format: a header line "culvert-xds-last-good v1 <unix ms>\n",
// then per type one length-prefixed (4 bytes, big endian) DeltaDiscoveryResponse whose
// system_version_info is the type's last accepted version and whose resources carry each
// accepted resource's name, version and payload.
// Written with writeFileAtomically (LastGoodWriter).
std::string encodeLastGood(const AdsState& state, SystemTime now);
struct LastGood {
  SystemTime written;
  size_t resources = 0;
  std::vector<ResourceRejection> rejected;
};
// Loads the file into `state` (which must be fresh).
common::Result<LastGood> readLastGood(const std::filesystem::path& file, AdsState& state);

class AdsClient {
public:
  using PublishFn = std::function<void(std::shared_ptr<const config::Snapshot>)>;

  AdsClient(event::Dispatcher& dispatcher, common::StatsStore& stats, AdsClientOptions options, GrpcTarget target,
            PublishFn publish);
  ~AdsClient();

  // Restores the durable store (publishing it when younger than max_stale), then connects.
  void start();

  bool connected() const { return connected_; }
  // Serving restored resources that the control plane has not confirmed yet.
  bool stale() const { return stale_since_.has_value(); }
  // How old the served stale configuration is; 0 when not stale.
  std::chrono::seconds staleAge() const;
  std::chrono::seconds maxStale() const { return options_.max_stale; }
  bool hasConfig() const { return published_; }
  std::string configDumpJson() const;

private:
  void connect();
  void onOpen();
  void onMessage(const std::string& bytes);
  void afterResponse(bool changed, bool accepted, const std::string& type, const std::string& version, int resources,
                     const std::vector<ResourceRejection>& rejected,
                     std::chrono::steady_clock::time_point started);
  void onClose(int status, const std::string& message);
  void scheduleReconnect();
  void sendRequest(const google::protobuf::Message& request);
  void persist();

  event::Dispatcher& dispatcher_;
  common::StatsStore& stats_;
  AdsClientOptions options_;
  GrpcTarget target_;
  PublishFn publish_;
  AdsState state_;
  std::unique_ptr<GrpcStream> stream_;
  std::unique_ptr<event::Timer> reconnect_timer_;
  std::unique_ptr<event::Timer> warming_timer_;
  uint32_t attempt_ = 0;
  bool connected_ = false;
  bool published_ = false;
  bool initial_fetch_published_ = false;
  bool responded_on_stream_ = false;
  std::optional<SystemTime> stale_since_;  // time the stale configuration was written
  // Why the last stream failed or was lost (TLS checks included), for /config_dump.
  std::optional<std::pair<SystemTime, std::string>> last_connect_error_;
  std::mt19937_64 rng_{std::random_device{}()};

  common::Gauge& connected_gauge_;
  common::Gauge& stale_gauge_;
  common::Gauge& apply_us_gauge_;
  common::Counter& reconnects_;
  common::Counter& persist_failures_;
  std::unique_ptr<LastGoodWriter> store_writer_;  // null when options_.state_file is empty
};

}  // namespace culvert::xds::client
