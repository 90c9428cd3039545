#include "xds/client/ads_client.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <google/protobuf/struct.pb.h>

#include "xds/proto/envoy/config/core/v3/base.pb.h"
#include "xds/proto/envoy/service/discovery/v3/discovery.pb.h"

namespace culvert::xds::client {

namespace {

namespace discovery = envoy::service::discovery::v3;
constexpr std::string_view kMagic = "culvert-xds-last-good v1 ";

int64_t unixMillis(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

}  // namespace

std::chrono::milliseconds backoffDelay(uint32_t attempt, std::chrono::milliseconds base,
                                       std::chrono::milliseconds cap, double unit) {
  int64_t delay = base.count();
  for (uint32_t i = 0; i < attempt && delay < cap.count(); ++i) delay *= 2;
  delay = std::min<int64_t>(delay, cap.count());
  unit = std::clamp(unit, 0.0, 1.0);
  return std::chrono::milliseconds(static_cast<int64_t>(static_cast<double>(delay) * (0.5 + 0.5 * unit)));
}

std::string encodeLastGood(const AdsState& state, SystemTime now) {
  std::string out(kMagic);
  out += std::to_string(unixMillis(now)) + "\n";
  for (auto t : kAllTypes) {
    const auto& s = state.state(t);
    discovery::DeltaDiscoveryResponse r;
    r.set_type_url(std::string(typeUrl(t)));
    r.set_system_version_info(s.accepted_version);
    for (const auto& [name, res] : s.resources) {
      auto* item = r.add_resources();
      item->set_name(name);
      item->set_version(res.version);
      item->mutable_resource()->set_type_url(std::string(typeUrl(t)));
      item->mutable_resource()->set_value(res.serialized);
    }
    uint32_t len = static_cast<uint32_t>(r.ByteSizeLong());
    char header[4] = {static_cast<char>(len >> 24), static_cast<char>(len >> 16), static_cast<char>(len >> 8),
                      static_cast<char>(len)};
    out.append(header, 4);
    r.AppendToString(&out);
  }
  return out;
}

common::Result<LastGood> readLastGood(const std::filesystem::path& file, AdsState& state) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return common::fail("cannot open", file.string());
  std::stringstream ss;
  ss << in.rdbuf();
  std::string data = ss.str();
  if (!data.starts_with(kMagic)) return common::fail("not a culvert last-good file", file.string());
  auto eol = data.find('\n');
  if (eol == std::string::npos) return common::fail("truncated header", file.string());
  LastGood out;
  int64_t ms = std::strtoll(data.substr(kMagic.size(), eol - kMagic.size()).c_str(), nullptr, 10);
  out.written = SystemTime(std::chrono::milliseconds(ms));
  size_t pos = eol + 1;
  std::vector<std::pair<ResourceType, discovery::DeltaDiscoveryResponse>> parts;
  while (pos < data.size()) {
    if (data.size() - pos < 4) return common::fail("truncated record", file.string());
    auto b = reinterpret_cast<const uint8_t*>(data.data() + pos);
    uint32_t len = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
    pos += 4;
    if (data.size() - pos < len) return common::fail("truncated record", file.string());
    discovery::DeltaDiscoveryResponse r;
    if (!r.ParseFromArray(data.data() + pos, static_cast<int>(len))) return common::fail("corrupt record", file.string());
    pos += len;
    auto type = typeFromUrl(r.type_url());
    if (!type) return common::fail("unknown type " + r.type_url(), file.string());
    parts.emplace_back(*type, std::move(r));
  }
  // Listeners and clusters first: they make the RDS/EDS names the others need.
  for (auto t : kAllTypes) {
    for (const auto& [type, r] : parts) {
      if (type != t) continue;
      std::vector<AdsState::Restored> resources;
      for (const auto& item : r.resources()) {
        resources.push_back({item.name(), item.version(), item.resource().value()});
      }
      out.resources += resources.size();
      auto rejected = state.restore(t, r.system_version_info(), resources, out.written);
      out.rejected.insert(out.rejected.end(), rejected.begin(), rejected.end());
    }
  }
  return out;
}

AdsClient::AdsClient(event::Dispatcher& dispatcher, common::StatsStore& stats, AdsClientOptions options,
                     GrpcTarget target, PublishFn publish)
    : dispatcher_(dispatcher),
      stats_(stats),
      options_(std::move(options)),
      target_(std::move(target)),
      publish_(std::move(publish)),
      connected_gauge_(stats.gauge("culvert_xds_connected", {}, "1 while the ADS stream to the control plane is up")),
      stale_gauge_(stats.gauge("culvert_xds_stale", {},
                               "1 while serving stored resources the control plane has not confirmed")),
      apply_us_gauge_(stats.gauge("culvert_xds_apply_duration_microseconds", {},
                                  "Time to decode, validate, translate and publish the last xDS response")),
      reconnects_(stats.counter("culvert_xds_stream_reconnects_total", {}, "ADS streams (re)opened")),
      persist_failures_(stats.counter("culvert_xds_persist_failures_total", {},
                                      "Failures writing the last accepted resources to state_dir")) {
  if (!options_.state_file.empty()) {
    store_writer_ = std::make_unique<LastGoodWriter>(options_.state_file, persist_failures_);
  }
}

AdsClient::~AdsClient() {
  warming_timer_.reset();
  stream_.reset();
  reconnect_timer_.reset();
  connected_gauge_.set(0);
}

std::chrono::seconds AdsClient::staleAge() const {
  if (!stale_since_) return std::chrono::seconds(0);
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now() - *stale_since_);
}

void AdsClient::start() {
  std::error_code ec;
  if (!options_.state_file.empty() && std::filesystem::exists(options_.state_file, ec)) {
    auto loaded = readLastGood(options_.state_file, state_);
    if (!loaded) {
      spdlog::error("xds: ignoring the stored configuration: {}", loaded.error().describe());
      state_ = AdsState();
    } else {
      auto age = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now() - loaded->written);
      for (const auto& r : loaded->rejected) spdlog::error("xds: stored resource {} rejected: {}", r.name, r.reason);
      if (age > options_.max_stale) {
        spdlog::warn("xds: stored configuration is {}s old, beyond xds.max_stale {}s: not serving it", age.count(),
                     options_.max_stale.count());
        state_ = AdsState();
      } else {
        stale_since_ = loaded->written;
        stale_gauge_.set(1);
        spdlog::warn("xds: serving the stored configuration ({} resources, {}s old) as stale until the control "
                     "plane confirms it",
                     loaded->resources, age.count());
        publish_(state_.snapshot());
        published_ = true;
      }
    }
  }
  reconnect_timer_ = dispatcher_.createTimer([this] { connect(); });
  warming_timer_ = dispatcher_.createTimer([this] {
    auto expired = state_.expireWarming(std::chrono::system_clock::now(), options_.initial_fetch_timeout);
    for (const auto& name : expired) {
      spdlog::warn("xds: initial fetch of {} timed out after {} ms: activating without it", name,
                   options_.initial_fetch_timeout.count());
    }
    if (!expired.empty() && state_.initialFetchDone()) {
      publish_(state_.snapshot());
      published_ = true;
    }
  });
  warming_timer_->enable(std::chrono::milliseconds(1000), std::chrono::milliseconds(1000));
  connect();
}

void AdsClient::connect() {
  GrpcStreamOptions so;
  so.method_path = std::string(options_.delta ? kDeltaAggregatedResourcesPath : kStreamAggregatedResourcesPath);
  so.keepalive_interval = options_.keepalive_interval;
  so.keepalive_timeout = options_.keepalive_timeout;
  so.tls = options_.tls;
  responded_on_stream_ = false;
  stream_ = std::make_unique<GrpcStream>(
      dispatcher_, target_, so,
      GrpcStream::Callbacks{[this] { onOpen(); }, [this](std::string m) { onMessage(m); },
                            [this](int status, std::string message) { onClose(status, message); }});
  stream_->start();
}

void AdsClient::sendRequest(const google::protobuf::Message& request) {
  if (stream_) stream_->send(request.SerializeAsString());
}

void AdsClient::onOpen() {
  connected_ = true;
  connected_gauge_.set(1);
  reconnects_.inc();
  spdlog::info("xds: ADS stream open to {}", options_.address);
  envoy::config::core::v3::Node node;
  node.set_id(options_.node_id);
  node.set_cluster(options_.node_cluster);
  node.set_user_agent_name("culvert");
  node.set_user_agent_version(CULVERT_VERSION);
  for (auto feature : kClientFeatures) node.add_client_features(std::string(feature));
  node.mutable_locality()->set_region(options_.locality_region);
  node.mutable_locality()->set_zone(options_.locality_zone);
  node.mutable_locality()->set_sub_zone(options_.locality_sub_zone);
  for (const auto& [k, v] : options_.node_metadata) {
    (*node.mutable_metadata()->mutable_fields())[k].set_string_value(v);
  }
  if (options_.delta) {
    for (const auto& r : state_.deltaStreamStartRequests(node)) sendRequest(r);
  } else {
    for (const auto& r : state_.streamStartRequests(node)) sendRequest(r);
  }
}

void AdsClient::onMessage(const std::string& bytes) {
  auto started = std::chrono::steady_clock::now();
  discovery::DiscoveryResponse sotw;
  discovery::DeltaDiscoveryResponse delta;
  bool parsed = options_.delta ? delta.ParseFromString(bytes) : sotw.ParseFromString(bytes);
  if (!parsed) {
    spdlog::error("xds: cannot decode a {}DiscoveryResponse ({} bytes); reconnecting", options_.delta ? "Delta" : "",
                  bytes.size());
    dispatcher_.deferredDelete(std::move(stream_));
    connected_ = false;
    connected_gauge_.set(0);
    scheduleReconnect();
    return;
  }
  responded_on_stream_ = true;
  attempt_ = 0;
  const std::string& type_url = options_.delta ? delta.type_url() : sotw.type_url();
  auto type = typeFromUrl(type_url);
  std::string label = type ? std::string(shortName(*type)) : std::string("unknown");
  stats_.counter("culvert_xds_update_attempts_total", {{"type", label}}, "xDS responses received").inc();
  if (options_.delta) {
    auto outcome = state_.onDeltaResponse(delta, std::chrono::system_clock::now());
    afterResponse(outcome.changed, outcome.accepted, label, delta.system_version_info(),
                  delta.resources_size() + delta.removed_resources_size(), outcome.rejected, started);
    for (const auto& r : outcome.requests) sendRequest(r);
  } else {
    auto outcome = state_.onResponse(sotw, std::chrono::system_clock::now());
    afterResponse(outcome.changed, outcome.accepted, label, sotw.version_info(), sotw.resources_size(),
                  outcome.rejected, started);
    for (const auto& r : outcome.requests) sendRequest(r);
  }
  apply_us_gauge_.set(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started).count());
}

// Applies before the caller acknowledges, as Envoy does.
void AdsClient::afterResponse(bool changed, bool accepted, const std::string& type, const std::string& version,
                              int resources, const std::vector<ResourceRejection>& rejected,
                              std::chrono::steady_clock::time_point) {
  // The first complete fetch publishes even when nothing differs from the restored state:
  // responses before it (e.g. RDS before CDS) changed the state without publishing.
  const bool first_complete = !initial_fetch_published_ && state_.initialFetchDone();
  if ((changed || first_complete) && state_.initialFetchDone()) {
    publish_(state_.snapshot());
    published_ = true;
    initial_fetch_published_ = true;
  }
  // An accepted response may change only versions (same resources): store those too, so a
  // restart resumes from what the control plane last had ACKed.
  if ((changed || accepted) && state_.initialFetchDone()) persist();
  if (state_.initialFetchDone() && stale_since_) {
    stale_since_.reset();
    stale_gauge_.set(0);
    spdlog::info("xds: the control plane has confirmed the configuration; no longer stale");
  }
  common::Labels labels = {{"type", type}};
  if (accepted) {
    stats_.counter("culvert_xds_update_successes_total", labels, "xDS responses ACKed").inc();
    spdlog::info("xds: {} version {} accepted ({} resources)", type, version, resources);
  } else {
    stats_.counter("culvert_xds_update_rejections_total", labels, "xDS responses NACKed").inc();
    for (const auto& r : rejected) spdlog::error("xds: {} version {}: rejected {}: {}", type, version, r.name, r.reason);
  }
}

void AdsClient::persist() {
  if (!store_writer_) return;
  store_writer_->write(encodeLastGood(state_, std::chrono::system_clock::now()));
}

void AdsClient::onClose(int status, const std::string& message) {
  bool was_connected = connected_;
  connected_ = false;
  connected_gauge_.set(0);
  last_connect_error_.emplace(std::chrono::system_clock::now(),
                              status == kGrpcTransportFailure
                                  ? message
                                  : "grpc-status " + std::to_string(status) + ": " + message);
  if (status == kGrpcTransportFailure) {
    spdlog::warn("xds: ADS stream to {} {}: {}", options_.address, was_connected ? "lost" : "failed", message);
  } else {
    spdlog::warn("xds: ADS stream to {} closed with grpc-status {}: {}", options_.address, status, message);
  }
  // We are inside the stream's callback: destroy it after the callback returns.
  dispatcher_.deferredDelete(std::move(stream_));
  if (responded_on_stream_) attempt_ = 0;
  scheduleReconnect();
}

void AdsClient::scheduleReconnect() {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  auto delay = backoffDelay(attempt_, options_.backoff_base, options_.backoff_cap, unit(rng_));
  ++attempt_;
  spdlog::info("xds: reconnecting in {} ms", delay.count());
  reconnect_timer_->enable(delay);
}

std::string AdsClient::configDumpJson() const {
  auto dump = nlohmann::json::parse(state_.configDumpJson(), nullptr, false);
  nlohmann::json out;
  out["address"] = options_.address;
  out["connected"] = connected_;
  out["stale"] = stale_since_.has_value();
  out["tls"] = options_.tls != nullptr;
  if (last_connect_error_) {
    out["last_connect_error"] = {{"time", formatTime(last_connect_error_->first)},
                                 {"message", last_connect_error_->second}};
  }
  out["types"] = std::move(dump);
  return out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace culvert::xds::client
