#pragma once

// The file source: a directory of files, each an xDS DiscoveryResponse in YAML (.yaml,
// .yml) or JSON (.json), as Envoy's path-based subscriptions read them. Any supported
// type may appear in any file; RDS and EDS named by listeners and clusters resolve from
// the same directory. Each resource is converted and validated on its own, so one bad
// resource never hides the others (DESIGN.md §3).

#include <filesystem>
#include <string>
#include <vector>

#include "proxy/common/error.h"
#include "proxy/config/snapshot.h"

namespace culvert::xds::client {

struct ResourceError {
  std::string file;      // file name within the directory
  std::string resource;  // resource name, or "resources[i]" when it has none
  std::string type_url;  // empty when the whole file is at fault
  std::string reason;    // "<field path>: <why>"
};

struct LoadResult {
  config::Snapshot snapshot;
  std::vector<ResourceError> errors;
  // {"version": ..., "accepted": [{file, version, type_url, name, resource}],
  //  "rejected": [{file, type_url, name, reason}]}
  std::string config_dump_json;
};

// Fails only when the directory is missing or unreadable; everything wrong inside it is
// reported in LoadResult::errors and the rest is still loaded. Files are read in name
// order; names starting with '.' (e.g. Kubernetes ConfigMap "..data") and other
// extensions are skipped.
common::Result<LoadResult> loadResourceDirectory(const std::filesystem::path& dir);

struct KeptResource {
  std::string type_url;
  std::string name;
};

// On a reload, a Listener, Cluster or Tenant rejected by name keeps its last good version
// from `previous` (the configuration being replaced), as over ADS: dropping it because of
// a typo would take its traffic down or lift its tenant's limits. A rejected
// RouteConfiguration or ClusterLoadAssignment rejects the listeners and clusters naming
// it, which then keep their last good versions, routes and endpoints included. The rest
// of the load applies. Returns what was kept, which the config dump also lists as
// "kept_last_good".
std::vector<KeptResource> keepLastGood(LoadResult& loaded, const config::Snapshot& previous);

}  // namespace culvert::xds::client
