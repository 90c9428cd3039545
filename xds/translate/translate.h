#pragma once

// Pure functions from xDS v3 protos to the Snapshot parts (proxy/config). All validation
// and every rejection reason live here: a resource asking for something culvert does not
// implement is rejected, never accepted with a silent downgrade (DESIGN.md §3).
// Error::where is the offending field path relative to the resource, e.g.
// "filter_chains[0].filters[0].typed_config".

#include <vector>

#include "proxy/common/error.h"
#include "proxy/config/snapshot.h"

namespace envoy::config::listener::v3 {
class Listener;
}
namespace envoy::config::route::v3 {
class RouteConfiguration;
}
namespace envoy::config::cluster::v3 {
class Cluster;
}
namespace envoy::config::endpoint::v3 {
class ClusterLoadAssignment;
}

namespace culvert::v1 {
class Tenant;
}

namespace culvert::xds::translate {

// HttpConnectionManager with an inline route_config gets it translated and set; with RDS
// only route_config_name is set and route_config stays null (the source resolves it).
common::Result<config::Listener> translateListener(const envoy::config::listener::v3::Listener& proto);

common::Result<config::RouteConfiguration> translateRouteConfiguration(
    const envoy::config::route::v3::RouteConfiguration& proto);

// STATIC clusters get their endpoints from load_assignment; EDS clusters get
// eds_service_name (service_name, else the cluster name) and no endpoints.
common::Result<config::Cluster> translateCluster(const envoy::config::cluster::v3::Cluster& proto);

// Endpoints Envoy would not balance to (health_status UNHEALTHY, DRAINING, TIMEOUT) are left
// out, as Envoy leaves them out; each locality still counts them in its `hosts`.
common::Result<config::LoadAssignment> translateClusterLoadAssignment(
    const envoy::config::endpoint::v3::ClusterLoadAssignment& proto);

// culvert.v1.Tenant (translate_tenant.cc).
common::Result<config::Tenant> translateTenant(const culvert::v1::Tenant& proto);

}  // namespace culvert::xds::translate
