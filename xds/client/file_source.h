#pragma once

// The file source: a directory of files, each an xDS DiscoveryResponse in YAML (.yaml,
// .yml) or JSON (.json), as Envoy's path-based subscriptions read them. Any supported
// type may appear in any file; RDS and EDS named by listeners and clusters resolve from
// the same directory. Each resource is converted and validated on its own, so one bad
// resource never hides the others (DESIGN.md §3).

#include <filesystem>
#include <map>
#include <set>
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

// A resource by type and name.
struct ResourceName {
  std::string type_url;
  std::string name;
  friend bool operator==(const ResourceName&, const ResourceName&) = default;
};

// The resources each file provided (file name -> resources), for the next reload.
using ResourceSources = std::map<std::string, std::vector<ResourceName>>;

struct LoadResult {
  config::Snapshot snapshot;
  std::vector<ResourceError> errors;
  // Files whose resources could not all be read: not YAML or JSON, no resources list,
  // unreadable. On a reload their previous resources stay (keepLastGood).
  std::set<std::string> unread_files;
  ResourceSources sources;
  // {"version": ..., "accepted": [{file, version, type_url, name, resource}],
  //  "rejected": [{file, type_url, name, reason}]}
  std::string config_dump_json;
};

// Fails only when the directory is missing or unreadable; everything wrong inside it is
// reported in LoadResult::errors and the rest is still loaded. Files are read in name
// order; names starting with '.' (e.g. Kubernetes ConfigMap "..data") and other
// extensions are skipped.
common::Result<LoadResult> loadResourceDirectory(const std::filesystem::path& dir);

// On a reload, a Listener, Cluster or Tenant rejected by name keeps its last good version
// from `previous` (the configuration being replaced), as over ADS: dropping it because of
// a typo would take its traffic down or lift its tenant's limits. So does every such
// resource of a file that could not be read at all (a YAML syntax error), as
// `previous_sources` (the last load's LoadResult::sources) lists them. A rejected
// RouteConfiguration or ClusterLoadAssignment rejects the listeners and clusters naming
// it, which then keep their last good versions, routes and endpoints included. The rest
// of the load applies. Returns what was kept, which the config dump also lists as
// "kept_last_good" and `loaded.sources` records under the file at fault.
std::vector<ResourceName> keepLastGood(LoadResult& loaded, const config::Snapshot& previous,
                                       const ResourceSources& previous_sources);

}  // namespace culvert::xds::client
