#pragma once

// Translation of the cluster and route fields that drive upstream selection and
// protection: LB policies and their configs, circuit breakers, outlier detection,
// culvert.v1.ClusterExtensions and route hash policies. Used by translate.cc.

#include <vector>

#include "proxy/common/error.h"
#include "proxy/config/snapshot.h"

namespace envoy::config::cluster::v3 {
class Cluster;
}
namespace envoy::config::route::v3 {
class RouteAction;
}

namespace culvert::xds::translate {

// lb_policy (other than CLUSTER_PROVIDED), its lb_config, common_lb_config,
// circuit_breakers, outlier_detection and typed_extension_protocol_options into `out`.
common::Result<void> translateUpstreamPolicies(const envoy::config::cluster::v3::Cluster& proto, config::Cluster& out);

common::Result<std::vector<config::HashPolicy>> translateHashPolicies(const envoy::config::route::v3::RouteAction& proto);

}  // namespace culvert::xds::translate
