#include "xds/client/ads_state.h"

#include <google/protobuf/any.pb.h>
#include <google/protobuf/arena.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <algorithm>
#include <utility>

#include <nlohmann/json.hpp>

#include "xds/proto/culvert/v1/tenant.pb.h"
#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/endpoint/v3/endpoint.pb.h"
#include "xds/proto/envoy/config/listener/v3/listener.pb.h"
#include "xds/proto/envoy/config/route/v3/route.pb.h"
#include "xds/proto/envoy/service/discovery/v3/discovery.pb.h"
#include "xds/translate/translate.h"
#include "xds/translate/type_urls.h"

namespace culvert::xds::client {

std::string formatTime(SystemTime t) {
  auto secs = std::chrono::time_point_cast<std::chrono::milliseconds>(t).time_since_epoch().count();
  std::time_t tt = static_cast<std::time_t>(secs / 1000);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(secs % 1000));
  return buf;
}

namespace {

namespace discovery = envoy::service::discovery::v3;
using nlohmann::json;
using translate::messageNameOf;

constexpr int kInvalidArgument = 3;  // google.rpc.Code.INVALID_ARGUMENT

// Decodes and translates one resource. On success `name` and the translation are set.
struct Decoded {
  std::string name;
  AcceptedResource resource;
};

common::Result<Decoded> decodeResource(ResourceType type, const std::string& payload) {
  Decoded out;
  out.resource.serialized = payload;
  // One arena per resource: a 10k-endpoint assignment is freed at once, not per message.
  google::protobuf::Arena arena;
  switch (type) {
    case ResourceType::Listener: {
      auto& proto = *google::protobuf::Arena::CreateMessage<envoy::config::listener::v3::Listener>(&arena);
      if (!proto.ParseFromString(payload)) return common::fail("cannot decode the Listener");
      out.name = proto.name();
      if (out.name.empty()) return common::fail("a listener needs a name", "name");
      auto t = translate::translateListener(proto);
      if (!t) return std::unexpected(t.error());
      out.resource.listener = std::make_shared<const config::Listener>(std::move(*t));
      break;
    }
    case ResourceType::RouteConfiguration: {
      auto& proto = *google::protobuf::Arena::CreateMessage<envoy::config::route::v3::RouteConfiguration>(&arena);
      if (!proto.ParseFromString(payload)) return common::fail("cannot decode the RouteConfiguration");
      out.name = proto.name();
      if (out.name.empty()) return common::fail("a route configuration needs a name", "name");
      auto t = translate::translateRouteConfiguration(proto);
      if (!t) return std::unexpected(t.error());
      out.resource.route = std::make_shared<const config::RouteConfiguration>(std::move(*t));
      break;
    }
    case ResourceType::Cluster: {
      auto& proto = *google::protobuf::Arena::CreateMessage<envoy::config::cluster::v3::Cluster>(&arena);
      if (!proto.ParseFromString(payload)) return common::fail("cannot decode the Cluster");
      out.name = proto.name();
      if (out.name.empty()) return common::fail("a cluster needs a name", "name");
      auto t = translate::translateCluster(proto);
      if (!t) return std::unexpected(t.error());
      out.resource.cluster = std::make_shared<const config::Cluster>(std::move(*t));
      break;
    }
    case ResourceType::ClusterLoadAssignment: {
      auto& proto = *google::protobuf::Arena::CreateMessage<envoy::config::endpoint::v3::ClusterLoadAssignment>(&arena);
      if (!proto.ParseFromString(payload)) return common::fail("cannot decode the ClusterLoadAssignment");
      out.name = proto.cluster_name();
      if (out.name.empty()) return common::fail("a ClusterLoadAssignment needs a cluster_name", "cluster_name");
      auto t = translate::translateClusterLoadAssignment(proto);
      if (!t) return std::unexpected(t.error());
      out.resource.endpoints = std::make_shared<const config::LoadAssignment>(std::move(*t));
      break;
    }
    case ResourceType::Tenant: {
      auto& proto = *google::protobuf::Arena::CreateMessage<culvert::v1::Tenant>(&arena);
      if (!proto.ParseFromString(payload)) return common::fail("cannot decode the Tenant");
      out.name = proto.name();
      auto t = translate::translateTenant(proto);
      if (!t) return std::unexpected(t.error());
      out.resource.tenant = std::make_shared<const config::Tenant>(std::move(*t));
      break;
    }
  }
  return out;
}

// The accepted resource that `payload` repeats byte for byte, or nullptr. The name is read
// off the wire (field 1, the name of every type culvert takes; the last occurrence wins,
// as when parsing) without decoding the rest: State of the World resends every resource
// of a type with each change, and decoding a 10,000-endpoint assignment again to find it
// unchanged costs milliseconds. A misread name can only miss: a hit needs the same bytes
// as a resource that was decoded under that name.
AcceptedResource* unchangedResource(TypeState& s, const std::string& payload, std::string* name) {
  using google::protobuf::internal::WireFormatLite;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(payload.data()),
                                            static_cast<int>(payload.size()));
  std::optional<std::string> found;
  while (uint32_t tag = in.ReadTag()) {
    if (tag == WireFormatLite::MakeTag(1, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
      std::string text;
      if (!WireFormatLite::ReadString(&in, &text)) return nullptr;
      found = std::move(text);
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return nullptr;
    }
  }
  if (!found || !in.ConsumedEntireMessage()) return nullptr;
  auto it = s.resources.find(*found);
  if (it == s.resources.end() || it->second.serialized != payload) return nullptr;
  *name = std::move(*found);
  return &it->second;
}

// The name of a resource that failed to decode, when the payload still yields one.
std::string bestEffortName(ResourceType type, const std::string& payload, int index) {
  std::string name;
  switch (type) {
    case ResourceType::Listener: {
      envoy::config::listener::v3::Listener p;
      if (p.ParsePartialFromString(payload)) name = p.name();
      break;
    }
    case ResourceType::RouteConfiguration: {
      envoy::config::route::v3::RouteConfiguration p;
      if (p.ParsePartialFromString(payload)) name = p.name();
      break;
    }
    case ResourceType::Cluster: {
      envoy::config::cluster::v3::Cluster p;
      if (p.ParsePartialFromString(payload)) name = p.name();
      break;
    }
    case ResourceType::ClusterLoadAssignment: {
      envoy::config::endpoint::v3::ClusterLoadAssignment p;
      if (p.ParsePartialFromString(payload)) name = p.cluster_name();
      break;
    }
    case ResourceType::Tenant: {
      culvert::v1::Tenant p;
      if (p.ParsePartialFromString(payload)) name = p.name();
      break;
    }
  }
  return name.empty() ? "resources[" + std::to_string(index) + "]" : name;
}

std::vector<std::string> routeNamesOf(const config::Listener& l) {
  std::vector<std::string> names;
  for (const auto& chain : l.filter_chains) {
    if (!chain.http.route_config && !chain.tcp_proxy) names.push_back(chain.http.route_config_name);
  }
  return names;
}

}  // namespace

std::string_view typeUrl(ResourceType type) {
  switch (type) {
    case ResourceType::Listener:
      return translate::kListenerType;
    case ResourceType::RouteConfiguration:
      return translate::kRouteConfigurationType;
    case ResourceType::Cluster:
      return translate::kClusterType;
    case ResourceType::ClusterLoadAssignment:
      return translate::kClusterLoadAssignmentType;
    case ResourceType::Tenant:
      return translate::kTenantType;
  }
  return {};
}

std::optional<ResourceType> typeFromUrl(std::string_view type_url) {
  for (auto t : kAllTypes) {
    if (messageNameOf(typeUrl(t)) == messageNameOf(type_url)) return t;
  }
  return std::nullopt;
}

std::string_view shortName(ResourceType type) {
  switch (type) {
    case ResourceType::Listener:
      return "LDS";
    case ResourceType::RouteConfiguration:
      return "RDS";
    case ResourceType::Cluster:
      return "CDS";
    case ResourceType::ClusterLoadAssignment:
      return "EDS";
    case ResourceType::Tenant:
      return "TENANT";
  }
  return "?";
}

AdsState::AdsState() {
  // LDS, CDS and Tenants are wildcard subscriptions from the start; RDS/EDS follow names.
  mut(ResourceType::Listener).subscribed = true;
  mut(ResourceType::Cluster).subscribed = true;
  mut(ResourceType::Tenant).subscribed = true;
}

AdsState::~AdsState() = default;

discovery::DiscoveryRequest AdsState::requestFor(ResourceType type) const {
  const auto& s = state(type);
  discovery::DiscoveryRequest r;
  r.set_type_url(std::string(typeUrl(type)));
  r.set_version_info(s.accepted_version);
  r.set_response_nonce(s.nonce);
  for (const auto& n : s.names) r.add_resource_names(n);
  return r;
}

std::vector<discovery::DiscoveryRequest> AdsState::streamStartRequests(const envoy::config::core::v3::Node& node) const {
  std::vector<discovery::DiscoveryRequest> out;
  for (auto t : kAllTypes) {
    if (!state(t).subscribed) continue;
    auto r = requestFor(t);
    r.clear_response_nonce();  // nonces belong to the stream that sent them
    if (out.empty()) *r.mutable_node() = node;
    out.push_back(std::move(r));
  }
  return out;
}

ResponseOutcome AdsState::onResponse(const discovery::DiscoveryResponse& response, SystemTime now) {
  ResponseOutcome out;
  auto type = typeFromUrl(response.type_url());
  if (!type) {
    // Not a type culvert asked for: NACK it so the control plane sees why.
    discovery::DiscoveryRequest nack;
    nack.set_type_url(response.type_url());
    nack.set_response_nonce(response.nonce());
    nack.mutable_error_detail()->set_code(kInvalidArgument);
    nack.mutable_error_detail()->set_message("unsupported resource type '" + response.type_url() + "'");
    out.requests.push_back(std::move(nack));
    out.accepted = false;
    out.rejected.push_back({response.type_url(), "unsupported resource type"});
    return out;
  }
  out.type = *type;
  TypeState& s = mut(*type);
  s.nonce = response.nonce();
  s.received = true;
  const bool wildcard = isWildcard(*type);

  std::set<std::string> seen;  // every name the response carried, valid or not
  for (int i = 0; i < response.resources_size(); ++i) {
    const auto& any = response.resources(i);
    if (messageNameOf(any.type_url()) != messageNameOf(typeUrl(*type))) {
      out.rejected.push_back({"resources[" + std::to_string(i) + "]",
                              "type_url '" + any.type_url() + "' does not match the response's '" +
                                  response.type_url() + "'"});
      continue;
    }
    std::string name;
    AcceptedResource* same = unchangedResource(s, any.value(), &name);
    std::optional<Decoded> decoded;
    if (!same) {
      auto result = decodeResource(*type, any.value());
      if (!result) {
        std::string bad = bestEffortName(*type, any.value(), i);
        seen.insert(bad);
        out.rejected.push_back({bad, result.error().describe()});
        continue;
      }
      name = result->name;
      decoded = std::move(*result);
    }
    if (!seen.insert(name).second) {
      out.rejected.push_back({name, "duplicate resource name in the response"});
      continue;
    }
    if (!wildcard && !s.names.contains(name)) continue;  // not subscribed: ignored
    if (!same) {
      auto it = s.resources.find(name);
      if (it != s.resources.end() && it->second.serialized == decoded->resource.serialized) same = &it->second;
    }
    if (same) {
      same->version = response.version_info();
      continue;
    }
    decoded->resource.version = response.version_info();
    decoded->resource.last_updated = now;
    s.resources[name] = std::move(decoded->resource);
    out.changed = true;
  }
  if (wildcard) {
    // State of the World: a listener/cluster the response does not carry is removed. One
    // it carried but rejected keeps its last good version.
    for (auto it = s.resources.begin(); it != s.resources.end();) {
      if (!seen.contains(it->first)) {
        it = s.resources.erase(it);
        out.changed = true;
      } else {
        ++it;
      }
    }
  }

  out.accepted = out.rejected.empty();
  discovery::DiscoveryRequest reply;
  reply.set_type_url(std::string(typeUrl(*type)));
  reply.set_response_nonce(response.nonce());
  if (out.accepted) {
    s.accepted_version = response.version_info();
  } else {
    std::string message;
    for (const auto& r : out.rejected) message += (message.empty() ? "" : "\n") + r.name + ": " + r.reason;
    reply.mutable_error_detail()->set_code(kInvalidArgument);
    reply.mutable_error_detail()->set_message(message);
    s.rejected_version = response.version_info();
    s.rejected = out.rejected;
    s.rejected_at = now;
  }
  reply.set_version_info(s.accepted_version);

  auto changed_types = refreshSubscriptions(now);
  for (const auto& n : s.names) reply.add_resource_names(n);
  out.requests.push_back(std::move(reply));
  for (auto t : changed_types) {
    if (t == *type) continue;  // already carried by the ACK/NACK above
    out.requests.push_back(requestFor(t));
  }
  if (!changed_types.empty()) out.changed = true;
  refreshActive();
  return out;
}

std::vector<ResourceType> AdsState::refreshSubscriptions(SystemTime now) {
  std::vector<ResourceType> changed;
  std::set<std::string> routes;
  for (const auto& [name, r] : state(ResourceType::Listener).resources) {
    for (auto& n : routeNamesOf(*r.listener)) routes.insert(std::move(n));
  }
  std::set<std::string> assignments;
  for (const auto& [name, r] : state(ResourceType::Cluster).resources) {
    if (r.cluster->type == config::ClusterType::Eds) assignments.insert(r.cluster->eds_service_name);
  }
  auto update = [&](ResourceType t, std::set<std::string> names) {
    TypeState& s = mut(t);
    if (names == s.names && (s.subscribed || names.empty())) return;
    for (const auto& n : names) s.subscribed_at.try_emplace(n, now);
    std::erase_if(s.subscribed_at, [&](const auto& kv) { return !names.contains(kv.first); });
    std::erase_if(s.fetch_timed_out, [&](const auto& n) { return !names.contains(n); });
    s.names = std::move(names);
    // A type stays subscribed once used: an empty name list then unsubscribes from all
    // (an empty list on a non-wildcard type is not a wildcard after the first request).
    s.subscribed = true;
    for (auto it = s.resources.begin(); it != s.resources.end();) {
      it = s.names.contains(it->first) ? std::next(it) : s.resources.erase(it);
    }
    changed.push_back(t);
  };
  update(ResourceType::RouteConfiguration, std::move(routes));
  update(ResourceType::ClusterLoadAssignment, std::move(assignments));
  return changed;
}

void AdsState::refreshActive() {
  const auto& lds = state(ResourceType::Listener).resources;
  const auto& rds = state(ResourceType::RouteConfiguration).resources;
  const auto& cds = state(ResourceType::Cluster).resources;
  const auto& eds = state(ResourceType::ClusterLoadAssignment).resources;

  std::erase_if(active_listeners_, [&](const auto& kv) { return !lds.contains(kv.first); });
  // Whether `active` was resolved from `source` and every route it names is still the
  // RDS resource it got. (A route missing from RDS takes the full path below, which knows
  // what a fetch timeout means.)
  auto current = [&rds](const ActiveListener& active, const std::shared_ptr<const config::Listener>& source) {
    if (active.from_lds != source) return false;
    for (size_t i = 0; i < source->filter_chains.size(); ++i) {
      const auto& chain = source->filter_chains[i];
      if (chain.http.route_config || chain.tcp_proxy) continue;
      auto route = rds.find(chain.http.route_config_name);
      if (route == rds.end()) return false;
      if (route->second.route != active.listener->filter_chains[i].http.route_config) return false;
    }
    return true;
  };
  for (const auto& [name, r] : lds) {
    auto active = active_listeners_.find(name);
    if (active != active_listeners_.end() && current(active->second, r.listener)) continue;
    auto resolved = std::make_shared<config::Listener>(*r.listener);
    bool ready = true;
    for (auto& chain : resolved->filter_chains) {
      if (chain.http.route_config || chain.tcp_proxy) continue;  // TCP proxy chains name no routes
      auto route = rds.find(chain.http.route_config_name);
      if (route != rds.end()) {
        chain.http.route_config = route->second.route;
      } else if (state(ResourceType::RouteConfiguration).fetch_timed_out.contains(chain.http.route_config_name)) {
        auto empty = std::make_shared<config::RouteConfiguration>();
        empty->name = chain.http.route_config_name;  // no virtual hosts: every request gets 404
        chain.http.route_config = std::move(empty);
      } else {
        ready = false;
        break;
      }
    }
    if (ready) active_listeners_[name] = {std::move(resolved), r.listener};  // else the active one (if any) stays
  }
  std::erase_if(active_clusters_, [&](const auto& kv) { return !cds.contains(kv.first); });
  for (const auto& [name, r] : cds) {
    if (r.cluster->type != config::ClusterType::Eds) {
      active_clusters_[name] = {r.cluster, nullptr, nullptr};
      continue;
    }
    auto cla = eds.find(r.cluster->eds_service_name);
    if (cla == eds.end()) {
      if (!state(ResourceType::ClusterLoadAssignment).fetch_timed_out.contains(r.cluster->eds_service_name)) {
        continue;  // warming
      }
      active_clusters_[name] = {r.cluster, nullptr, nullptr};  // initial fetch timed out: no endpoints
      continue;
    }
    auto& active = active_clusters_[name];
    if (active.from_cds == r.cluster && active.from_eds == cla->second.endpoints) continue;
    auto resolved = std::make_shared<config::Cluster>(*r.cluster);
    resolved->endpoints = cla->second.endpoints->endpoints;
    resolved->localities = cla->second.endpoints->localities;
    active = {std::move(resolved), r.cluster, cla->second.endpoints};
  }
}

std::shared_ptr<const config::Snapshot> AdsState::snapshot() const {
  auto snap = std::make_shared<config::Snapshot>();
  auto listeners = std::make_shared<config::ListenerTable>();
  for (const auto& [name, l] : active_listeners_) listeners->by_name.emplace(name, l.listener);
  auto clusters = std::make_shared<config::ClusterTable>();
  for (const auto& [name, c] : active_clusters_) clusters->by_name.emplace(name, c.cluster);
  snap->listeners = std::move(listeners);
  snap->clusters = std::move(clusters);
  auto tenants = std::make_shared<config::TenantTable>();
  for (const auto& [name, r] : state(ResourceType::Tenant).resources) tenants->by_name.emplace(name, r.tenant);
  snap->tenants = std::move(tenants);
  std::string version;
  for (auto t : kAllTypes) {
    if (!version.empty()) version += ",";
    version += std::string(shortName(t)) + "=" + state(t).accepted_version;
  }
  snap->version = std::move(version);
  return snap;
}

std::vector<std::string> AdsState::expireWarming(SystemTime now, std::chrono::milliseconds timeout) {
  std::vector<std::string> expired;
  for (auto t : {ResourceType::RouteConfiguration, ResourceType::ClusterLoadAssignment}) {
    TypeState& s = mut(t);
    for (const auto& [name, since] : s.subscribed_at) {
      if (s.resources.contains(name) || s.fetch_timed_out.contains(name) || now - since < timeout) continue;
      s.fetch_timed_out.insert(name);
      expired.push_back(std::string(shortName(t)) + " " + name);
    }
  }
  if (!expired.empty()) refreshActive();
  return expired;
}

bool AdsState::initialFetchDone() const {
  return state(ResourceType::Listener).received && state(ResourceType::Cluster).received;
}

std::string AdsState::configDumpJson() const {
  json dump = json::object();
  for (auto t : kAllTypes) {
    const auto& s = state(t);
    json j = json::object();
    j["type_url"] = std::string(typeUrl(t));
    j["version"] = s.accepted_version;
    j["nonce"] = s.nonce;
    json names = json::array();
    for (const auto& n : s.names) names.push_back(n);
    j["subscribed"] = isWildcard(t) ? json("*") : names;
    json resources = json::array();
    for (const auto& [name, r] : s.resources) {
      resources.push_back({{"name", name}, {"version", r.version}, {"last_updated", formatTime(r.last_updated)}});
    }
    j["resources"] = std::move(resources);
    if (s.rejected_at) {
      json bad = json::array();
      for (const auto& r : s.rejected) bad.push_back({{"name", r.name}, {"reason", r.reason}});
      j["last_rejected"] = {{"version", s.rejected_version}, {"at", formatTime(*s.rejected_at)}, {"resources", bad}};
    }
    dump[std::string(shortName(t))] = std::move(j);
  }
  return dump.dump(2, ' ', false, json::error_handler_t::replace);
}

std::vector<ResourceRejection> AdsState::restore(ResourceType type, const std::string& accepted_version,
                                                 const std::vector<Restored>& resources, SystemTime updated) {
  std::vector<ResourceRejection> rejected;
  TypeState& s = mut(type);
  for (const auto& r : resources) {
    auto decoded = decodeResource(type, r.bytes);
    if (!decoded) {
      rejected.push_back({r.name, decoded.error().describe()});
      continue;
    }
    decoded->resource.version = r.version;
    decoded->resource.last_updated = updated;
    s.resources[decoded->name] = std::move(decoded->resource);
  }
  s.accepted_version = accepted_version;
  refreshSubscriptions(updated);
  refreshActive();
  return rejected;
}

}  // namespace culvert::xds::client

namespace culvert::xds::client {

common::Result<bool> AdsState::applyResource(ResourceType type, const std::string& name_hint,
                                             const std::string& payload, const std::string& version,
                                             SystemTime now, std::string* name_out) {
  TypeState& s = mut(type);
  if (auto* same = unchangedResource(s, payload, name_out); same && (name_hint.empty() || name_hint == *name_out)) {
    same->version = version;
    return false;
  }
  auto decoded = decodeResource(type, payload);
  if (!decoded) {
    *name_out = name_hint;
    return std::unexpected(decoded.error());
  }
  *name_out = decoded->name;
  if (!name_hint.empty() && name_hint != decoded->name) {
    return common::fail("the resource is named '" + decoded->name + "' but delivered as '" + name_hint + "'");
  }
  auto it = s.resources.find(decoded->name);
  if (it != s.resources.end() && it->second.serialized == decoded->resource.serialized) {
    it->second.version = version;
    return false;
  }
  decoded->resource.version = version;
  decoded->resource.last_updated = now;
  s.resources[decoded->name] = std::move(decoded->resource);
  return true;
}

std::vector<discovery::DeltaDiscoveryRequest> AdsState::deltaStreamStartRequests(
    const envoy::config::core::v3::Node& node) const {
  std::vector<discovery::DeltaDiscoveryRequest> out;
  for (auto t : kAllTypes) {
    const auto& s = state(t);
    if (!s.subscribed) continue;
    discovery::DeltaDiscoveryRequest r;
    r.set_type_url(std::string(typeUrl(t)));
    for (const auto& n : s.names) r.add_resource_names_subscribe(n);
    for (const auto& [name, res] : s.resources) (*r.mutable_initial_resource_versions())[name] = res.version;
    if (out.empty()) *r.mutable_node() = node;
    out.push_back(std::move(r));
  }
  return out;
}

DeltaOutcome AdsState::onDeltaResponse(const discovery::DeltaDiscoveryResponse& response, SystemTime now) {
  DeltaOutcome out;
  auto type = typeFromUrl(response.type_url());
  discovery::DeltaDiscoveryRequest reply;
  reply.set_type_url(response.type_url());
  reply.set_response_nonce(response.nonce());
  if (!type) {
    out.accepted = false;
    out.rejected.push_back({response.type_url(), "unsupported resource type"});
    reply.mutable_error_detail()->set_code(kInvalidArgument);
    reply.mutable_error_detail()->set_message("unsupported resource type '" + response.type_url() + "'");
    out.requests.push_back(std::move(reply));
    return out;
  }
  out.type = *type;
  TypeState& s = mut(*type);
  s.nonce = response.nonce();
  s.received = true;
  const bool wildcard = isWildcard(*type);
  std::set<std::string> seen;
  for (int i = 0; i < response.resources_size(); ++i) {
    const auto& item = response.resources(i);
    std::string label = item.name().empty() ? "resources[" + std::to_string(i) + "]" : item.name();
    if (!item.has_resource()) {
      out.rejected.push_back({label, "a resource without a payload (culvert does not use aliases or TTL heartbeats)"});
      continue;
    }
    if (messageNameOf(item.resource().type_url()) != messageNameOf(typeUrl(*type))) {
      out.rejected.push_back({label, "type_url '" + item.resource().type_url() + "' does not match the response's '" +
                                         response.type_url() + "'"});
      continue;
    }
    if (!item.name().empty() && !seen.insert(item.name()).second) {
      out.rejected.push_back({label, "duplicate resource name in the response"});
      continue;
    }
    if (!wildcard && !item.name().empty() && !s.names.contains(item.name())) continue;
    std::string name;
    auto applied = applyResource(*type, item.name(), item.resource().value(), item.version(), now, &name);
    if (!applied) {
      out.rejected.push_back({name.empty() ? label : name, applied.error().describe()});
      continue;
    }
    out.changed |= *applied;
  }
  for (const auto& name : response.removed_resources()) {
    if (s.resources.erase(name) > 0) out.changed = true;
  }
  out.accepted = out.rejected.empty();
  if (out.accepted) {
    s.accepted_version = response.system_version_info();
  } else {
    std::string message;
    for (const auto& r : out.rejected) message += (message.empty() ? "" : "\n") + r.name + ": " + r.reason;
    reply.mutable_error_detail()->set_code(kInvalidArgument);
    reply.mutable_error_detail()->set_message(message);
    s.rejected_version = response.system_version_info();
    s.rejected = out.rejected;
    s.rejected_at = now;
  }
  out.requests.push_back(std::move(reply));

  std::set<std::string> old_routes = state(ResourceType::RouteConfiguration).names;
  std::set<std::string> old_assignments = state(ResourceType::ClusterLoadAssignment).names;
  bool routes_were = state(ResourceType::RouteConfiguration).subscribed;
  bool assignments_were = state(ResourceType::ClusterLoadAssignment).subscribed;
  auto changed_types = refreshSubscriptions(now);
  for (auto t : changed_types) {
    const auto& before = t == ResourceType::RouteConfiguration ? old_routes : old_assignments;
    bool was = t == ResourceType::RouteConfiguration ? routes_were : assignments_were;
    const auto& now_names = state(t).names;
    discovery::DeltaDiscoveryRequest r;
    r.set_type_url(std::string(typeUrl(t)));
    for (const auto& n : now_names) {
      if (!before.contains(n)) r.add_resource_names_subscribe(n);
    }
    for (const auto& n : before) {
      if (!now_names.contains(n)) r.add_resource_names_unsubscribe(n);
    }
    if (was && r.resource_names_subscribe_size() == 0 && r.resource_names_unsubscribe_size() == 0) continue;
    out.requests.push_back(std::move(r));
  }
  if (!changed_types.empty()) out.changed = true;
  refreshActive();
  return out;
}

}  // namespace culvert::xds::client
