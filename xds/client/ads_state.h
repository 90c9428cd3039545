#pragma once

// The State-of-the-World ADS subscription state machine: no I/O, no clock of its own.
// It takes DiscoveryResponses, decodes/validates/translates every resource on its own
// (xds/translate), keeps the last good version of each resource, and says what to send
// back: the ACK or NACK for the response and any subscription changes the new resources
// cause (RDS names from HttpConnectionManagers, EDS names from Clusters).
//
// Protocol rules implemented (envoy xDS protocol, "ACK and NACK semantics" and "Resource
// updates"):
//  - An ACK carries the response's version_info and nonce. A NACK carries the last fully
//    accepted version_info of that type, the response's nonce and an error_detail
//    (INVALID_ARGUMENT) naming every rejected resource and why.
//  - Valid resources of a partly invalid response are applied; an invalid one keeps its
//    last good version (or stays absent when it never had one).
//  - LDS and CDS are wildcard subscriptions: a resource absent from a response is removed.
//    RDS and EDS name their resources: absence from a response removes nothing; a
//    resource is dropped when no listener/cluster names it any more.
//  - A listener waits (warms) until every RouteConfiguration it names is present, an EDS
//    cluster until its ClusterLoadAssignment is present; until then the snapshot keeps
//    the listener's/cluster's previous active version, if any (make-before-break).

#include <chrono>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "proxy/common/error.h"
#include "proxy/config/snapshot.h"

namespace envoy::service::discovery::v3 {
class DiscoveryRequest;
class DiscoveryResponse;
class DeltaDiscoveryRequest;
class DeltaDiscoveryResponse;
}  // namespace envoy::service::discovery::v3
namespace envoy::config::core::v3 {
class Node;
}

namespace culvert::xds::client {

// Tenant is culvert's own type (culvert.v1.Tenant), a wildcard subscription like LDS/CDS.
enum class ResourceType { Listener, RouteConfiguration, Cluster, ClusterLoadAssignment, Tenant };
inline constexpr ResourceType kAllTypes[] = {ResourceType::Listener, ResourceType::Cluster,
                                            ResourceType::RouteConfiguration, ResourceType::ClusterLoadAssignment,
                                            ResourceType::Tenant};
// LDS, CDS and Tenants are wildcard subscriptions; RDS and EDS name their resources.
constexpr bool isWildcard(ResourceType type) {
  return type == ResourceType::Listener || type == ResourceType::Cluster || type == ResourceType::Tenant;
}

std::string_view typeUrl(ResourceType type);
std::optional<ResourceType> typeFromUrl(std::string_view type_url);
std::string_view shortName(ResourceType type);  // "LDS", "RDS", "CDS", "EDS", "TENANT"

using SystemTime = std::chrono::system_clock::time_point;

// "2026-01-02T03:04:05.678Z" (UTC, milliseconds), as /config_dump shows times.
std::string formatTime(SystemTime t);

// One accepted resource, with everything /config_dump and the durable store need.
struct AcceptedResource {
  std::string version;       // version_info of the response that carried it
  std::string serialized;    // the resource's Any payload (wire bytes)
  SystemTime last_updated;
  // The translation; exactly one is set, matching the type.
  std::shared_ptr<const config::Listener> listener;
  std::shared_ptr<const config::RouteConfiguration> route;
  std::shared_ptr<const config::Cluster> cluster;
  std::shared_ptr<const config::LoadAssignment> endpoints;
  std::shared_ptr<const config::Tenant> tenant;
};

struct ResourceRejection {
  std::string name;  // resource name, or "resources[i]" when it has none
  std::string reason;
};

struct TypeState {
  std::set<std::string> names;  // subscribed names; unused (wildcard) for LDS and CDS
  bool subscribed = false;      // a request has been (or must be) sent for this type
  std::string accepted_version; // last fully accepted version_info
  std::string nonce;            // nonce of the last response received
  std::map<std::string, AcceptedResource> resources;
  // Last NACK, for /config_dump.
  std::string rejected_version;
  std::vector<ResourceRejection> rejected;
  std::optional<SystemTime> rejected_at;
  bool received = false;        // at least one response processed
  // RDS/EDS: when each name was first subscribed, and the names whose initial fetch timed
  // out (their listeners/clusters then activate with no routes/endpoints, as Envoy's do).
  std::map<std::string, SystemTime> subscribed_at;
  std::set<std::string> fetch_timed_out;
};

struct ResponseOutcome {
  // The ACK/NACK for the response first, then subscription changes of other types.
  std::vector<envoy::service::discovery::v3::DiscoveryRequest> requests;
  bool accepted = true;            // false: it was NACKed
  bool changed = false;            // the snapshot may differ: publish it again
  std::vector<ResourceRejection> rejected;
  ResourceType type = ResourceType::Listener;
};

// The Delta (incremental) variant: same resources, isolation and warming; requests name
// subscription changes, responses carry only changed resources (each with its own
// version) and removed_resources.
struct DeltaOutcome {
  std::vector<envoy::service::discovery::v3::DeltaDiscoveryRequest> requests;
  bool accepted = true;
  bool changed = false;
  std::vector<ResourceRejection> rejected;
  ResourceType type = ResourceType::Listener;
};

class AdsState {
public:
  AdsState();
  ~AdsState();

  // The requests to send on a fresh stream: one per subscribed type, carrying the last
  // accepted version_info and the names (no nonce). The node goes in the first only.
  std::vector<envoy::service::discovery::v3::DiscoveryRequest> streamStartRequests(
      const envoy::config::core::v3::Node& node) const;

  ResponseOutcome onResponse(const envoy::service::discovery::v3::DiscoveryResponse& response, SystemTime now);

  // Delta: on a fresh stream, one request per subscribed type with its names to subscribe
  // (none for the wildcard LDS/CDS) and initial_resource_versions of what is held.
  std::vector<envoy::service::discovery::v3::DeltaDiscoveryRequest> deltaStreamStartRequests(
      const envoy::config::core::v3::Node& node) const;
  DeltaOutcome onDeltaResponse(const envoy::service::discovery::v3::DeltaDiscoveryResponse& response,
                               SystemTime now);

  // The active configuration: listeners whose routes are all present, clusters whose
  // endpoints are present (or their previously active version while they warm).
  std::shared_ptr<const config::Snapshot> snapshot() const;

  // Initial-fetch timeout: RDS/EDS names subscribed at least `timeout` ago and still
  // absent stop holding their listeners/clusters back. Returns "RDS name"/"EDS name" for
  // each name that timed out now (non-empty = publish again).
  std::vector<std::string> expireWarming(SystemTime now, std::chrono::milliseconds timeout);

  // True once LDS and CDS each had a response (accepted or not): the first snapshot is
  // complete enough to publish.
  bool initialFetchDone() const;

  const TypeState& state(ResourceType type) const { return types_[static_cast<size_t>(type)]; }

  // {"LDS": {"version", "nonce", "subscribed": [...], "resources": [{name, version,
  // last_updated}], "last_rejected": {version, at, resources: [{name, reason}]}}, ...}
  std::string configDumpJson() const;

  // Restores accepted resources (from the durable store) as if a response had carried
  // them: same validation; returns the rejections (there should be none).
  struct Restored {
    std::string name;
    std::string version;
    std::string bytes;
  };
  std::vector<ResourceRejection> restore(ResourceType type, const std::string& accepted_version,
                                         const std::vector<Restored>& resources, SystemTime updated);

private:
  TypeState& mut(ResourceType type) { return types_[static_cast<size_t>(type)]; }
  // Decodes, translates and stores one resource; returns whether it changed anything,
  // or the rejection.
  common::Result<bool> applyResource(ResourceType type, const std::string& name_hint, const std::string& payload,
                                     const std::string& version, SystemTime now, std::string* name_out);
  // Recomputes RDS/EDS names from the listeners/clusters; drops unreferenced resources.
  // Returns the types whose names changed.
  std::vector<ResourceType> refreshSubscriptions(SystemTime now);
  envoy::service::discovery::v3::DiscoveryRequest requestFor(ResourceType type) const;
  // Moves listeners/clusters whose dependencies are present into the active set.
  void refreshActive();

  TypeState types_[std::size(kAllTypes)];
  // The last active (published) listener/cluster of each name, kept while a newer
  // version warms.
  struct ActiveListener {
    std::shared_ptr<const config::Listener> listener;
    // Resolved from this LDS resource: kept while it and its routes stay, so an EDS or
    // CDS update publishes the same listener objects (and the BPF capture write, which
    // follows listeners, is skipped).
    std::shared_ptr<const config::Listener> from_lds;
  };
  std::map<std::string, ActiveListener> active_listeners_;
  struct ActiveCluster {
    std::shared_ptr<const config::Cluster> cluster;
    // An EDS cluster resolved from these: kept while both stay, so an update of one
    // cluster's endpoints leaves every other cluster's object (and each worker's state
    // for it) untouched.
    std::shared_ptr<const config::Cluster> from_cds;
    std::shared_ptr<const config::LoadAssignment> from_eds;
  };
  std::map<std::string, ActiveCluster> active_clusters_;
};

}  // namespace culvert::xds::client
