#include "xds/client/file_source.h"

#include <google/protobuf/any.pb.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "xds/client/yaml_json.h"
#include "xds/proto/culvert/v1/tenant.pb.h"
#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/endpoint/v3/endpoint.pb.h"
#include "xds/proto/envoy/config/listener/v3/listener.pb.h"
#include "xds/proto/envoy/config/route/v3/route.pb.h"
#include "xds/translate/translate.h"
#include "xds/translate/type_urls.h"

namespace culvert::xds::client {

namespace {

namespace pb = google::protobuf;
using common::fail;
using common::Result;
using nlohmann::json;
using translate::messageNameOf;

// protobuf 3.21's JSON parser fails a whole message when any nested Any names a type it
// does not know. An unknown filter marked is_optional must still be accepted, so such an
// Any is parked as a Struct holding its type URL and restored afterwards to an Any with
// that type URL and no payload; translate then decides on the type URL alone.
constexpr std::string_view kStructUrl = "type.googleapis.com/google.protobuf.Struct";
constexpr std::string_view kUnresolvedKey = "culvert.unresolved_type";

void parkUnknownAnys(json& j) {
  if (j.is_object()) {
    auto it = j.find("@type");
    if (it != j.end() && it->is_string()) {
      std::string url = it->get<std::string>();
      std::string name(messageNameOf(url));
      if (pb::DescriptorPool::generated_pool()->FindMessageTypeByName(name) == nullptr) {
        json value = json::object();
        value[std::string(kUnresolvedKey)] = url;
        json parked = json::object();
        parked["@type"] = std::string(kStructUrl);
        parked["value"] = std::move(value);
        j = std::move(parked);
        return;
      }
    }
    for (auto& item : j.items()) parkUnknownAnys(item.value());
  } else if (j.is_array()) {
    for (auto& item : j) parkUnknownAnys(item);
  }
}

bool restoreParkedAnys(pb::Message& message);

bool restoreAny(pb::Any& any) {
  if (messageNameOf(any.type_url()) == messageNameOf(kStructUrl)) {
    pb::Struct parked;
    if (!any.UnpackTo(&parked) || parked.fields_size() != 1) return false;
    auto it = parked.fields().find(std::string(kUnresolvedKey));
    if (it == parked.fields().end() || !it->second.has_string_value()) return false;
    std::string url = it->second.string_value();
    any.set_type_url(url);
    any.clear_value();
    return true;
  }
  // Known payloads may hold parked Anys of their own (an HCM's HTTP filters).
  const auto* descriptor = pb::DescriptorPool::generated_pool()->FindMessageTypeByName(
      std::string(messageNameOf(any.type_url())));
  if (descriptor == nullptr) return false;
  const auto* prototype = pb::MessageFactory::generated_factory()->GetPrototype(descriptor);
  if (prototype == nullptr) return false;
  std::unique_ptr<pb::Message> inner(prototype->New());
  if (!inner->ParseFromString(any.value()) || !restoreParkedAnys(*inner)) return false;
  any.set_value(inner->SerializeAsString());
  return true;
}

// Returns whether anything changed.
bool restoreParkedAnys(pb::Message& message) {
  if (auto* any = dynamic_cast<pb::Any*>(&message)) return restoreAny(*any);
  const auto* reflection = message.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  bool changed = false;
  for (const auto* field : fields) {
    if (field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (field->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
        changed |= restoreParkedAnys(*reflection->MutableRepeatedMessage(&message, field, i));
      }
    } else {
      changed |= restoreParkedAnys(*reflection->MutableMessage(&message, field));
    }
  }
  return changed;
}

template <typename Proto>
Result<Proto> decode(json resource) {
  resource.erase("@type");
  parkUnknownAnys(resource);
  Proto proto;
  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;  // an unknown field is a reason to reject
  auto status = pb::util::JsonStringToMessage(resource.dump(), &proto, options);
  if (!status.ok()) return fail("cannot decode (culvert rejects fields it does not implement): " + std::string(status.message()));
  restoreParkedAnys(proto);
  return proto;
}

std::string describe(const common::Error& e) { return e.describe(); }

// One resource as read, and whether it ended up accepted.
struct Entry {
  std::string file;
  std::string version;
  std::string type_url;
  std::string name;
  json resource;
  std::optional<std::string> reason;  // set when rejected
};

struct Loader {
  std::vector<Entry> entries;
  std::vector<ResourceError> file_errors;
  std::set<std::string> unread_files;
  std::map<std::string, std::string> file_versions;

  // Keyed by name; the value indexes `entries`.
  std::map<std::string, std::pair<size_t, config::Listener>> listeners;
  std::map<std::string, std::pair<size_t, std::shared_ptr<const config::RouteConfiguration>>> routes;
  std::map<std::string, std::pair<size_t, config::Cluster>> clusters;
  std::map<std::string, std::pair<size_t, config::LoadAssignment>> assignments;
  std::map<std::string, std::pair<size_t, config::Tenant>> tenants;

  void fileError(const std::string& file, std::string reason) {
    file_errors.push_back(ResourceError{file, "", "", std::move(reason)});
  }
  // A file error that lost resources, not just a remark.
  void unreadFile(const std::string& file, std::string reason) {
    unread_files.insert(file);
    fileError(file, std::move(reason));
  }

  template <typename Map>
  bool duplicate(Map& map, Entry& entry) {
    auto it = map.find(entry.name);
    if (it == map.end()) return false;
    entry.reason = "duplicate name: already defined in " + entries[it->second.first].file;
    return true;
  }

  void addResource(const std::string& file, const std::string& version, int index, const json& resource) {
    Entry entry{file, version, "", "resources[" + std::to_string(index) + "]", resource, std::nullopt};
    auto reject = [&](std::string reason) {
      entry.reason = std::move(reason);
      entries.push_back(std::move(entry));
    };
    if (!resource.is_object()) return reject("a resource must be an object");
    auto type = resource.find("@type");
    if (type == resource.end() || !type->is_string()) return reject("@type is required");
    entry.type_url = type->get<std::string>();
    auto name_key = messageNameOf(entry.type_url) == messageNameOf(translate::kClusterLoadAssignmentType)
                        ? "cluster_name"
                        : "name";
    if (auto n = resource.find(name_key); n != resource.end() && n->is_string() && !n->get<std::string>().empty()) {
      entry.name = n->get<std::string>();
    }
    const bool named = entry.name.rfind("resources[", 0) != 0;
    auto type_name = messageNameOf(entry.type_url);
    size_t at = entries.size();

    if (type_name == messageNameOf(translate::kListenerType)) {
      auto proto = decode<envoy::config::listener::v3::Listener>(resource);
      if (!proto) return reject(describe(proto.error()));
      auto out = translate::translateListener(*proto);
      if (!out) return reject(describe(out.error()));
      if (duplicate(listeners, entry)) return reject(*entry.reason);
      listeners.emplace(entry.name, std::make_pair(at, std::move(*out)));
    } else if (type_name == messageNameOf(translate::kRouteConfigurationType)) {
      if (!named) return reject("name: a route configuration needs a name");
      auto proto = decode<envoy::config::route::v3::RouteConfiguration>(resource);
      if (!proto) return reject(describe(proto.error()));
      auto out = translate::translateRouteConfiguration(*proto);
      if (!out) return reject(describe(out.error()));
      if (duplicate(routes, entry)) return reject(*entry.reason);
      routes.emplace(entry.name,
                     std::make_pair(at, std::make_shared<const config::RouteConfiguration>(std::move(*out))));
    } else if (type_name == messageNameOf(translate::kClusterType)) {
      auto proto = decode<envoy::config::cluster::v3::Cluster>(resource);
      if (!proto) return reject(describe(proto.error()));
      auto out = translate::translateCluster(*proto);
      if (!out) return reject(describe(out.error()));
      if (duplicate(clusters, entry)) return reject(*entry.reason);
      clusters.emplace(entry.name, std::make_pair(at, std::move(*out)));
    } else if (type_name == messageNameOf(translate::kClusterLoadAssignmentType)) {
      if (!named) return reject("cluster_name: a ClusterLoadAssignment needs a cluster_name");
      auto proto = decode<envoy::config::endpoint::v3::ClusterLoadAssignment>(resource);
      if (!proto) return reject(describe(proto.error()));
      auto out = translate::translateClusterLoadAssignment(*proto);
      if (!out) return reject(describe(out.error()));
      if (duplicate(assignments, entry)) return reject(*entry.reason);
      assignments.emplace(entry.name, std::make_pair(at, std::move(*out)));
    } else if (type_name == messageNameOf(translate::kTenantType)) {
      auto proto = decode<culvert::v1::Tenant>(resource);
      if (!proto) return reject(describe(proto.error()));
      auto out = translate::translateTenant(*proto);
      if (!out) return reject(describe(out.error()));
      if (duplicate(tenants, entry)) return reject(*entry.reason);
      tenants.emplace(entry.name, std::make_pair(at, std::move(*out)));
    } else {
      return reject("unsupported resource type '" + entry.type_url +
                    "' (supported: Listener, RouteConfiguration, Cluster, ClusterLoadAssignment, culvert.v1.Tenant)");
    }
    entries.push_back(std::move(entry));
  }

  void addDocument(const std::string& file, const json& doc) {
    if (doc.is_null()) return;  // an empty YAML document
    if (!doc.is_object()) return unreadFile(file, "a file must hold a DiscoveryResponse (an object)");
    static const std::set<std::string> kKnown = {"version_info", "resources", "type_url", "nonce", "canary",
                                                 "control_plane"};
    for (const auto& item : doc.items()) {
      if (!kKnown.contains(item.key())) fileError(file, "unknown key '" + item.key() + "' (ignored)");
    }
    std::string version;
    if (auto v = doc.find("version_info"); v != doc.end()) {
      version = v->is_string() ? v->get<std::string>() : v->dump();
    }
    auto resources = doc.find("resources");
    if (resources == doc.end() || !resources->is_array()) {
      return unreadFile(file, "resources: a list of resources is required");
    }
    file_versions[file] = version;
    int index = 0;
    for (const auto& resource : *resources) {
      // nlohmann/json can throw on odd input (invalid UTF-8 on dump): keep it to one resource.
      try {
        addResource(file, version, index, resource);
      } catch (const std::exception& e) {
        entries.push_back(Entry{file, version, "", "resources[" + std::to_string(index) + "]", resource,
                                std::string("cannot process the resource: ") + e.what()});
      }
      ++index;
    }
  }

  void addFile(const std::filesystem::path& path) {
    std::string file = path.filename().string();
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in.good() && !in.eof()) return unreadFile(file, "cannot read the file");
    if (path.extension() == ".json") {
      json doc = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
      if (doc.is_discarded()) return unreadFile(file, "invalid JSON");
      return addDocument(file, doc);
    }
    auto docs = yamlToJson(text.str());
    if (!docs) return unreadFile(file, docs.error().describe());
    for (const auto& doc : *docs) addDocument(file, doc);
  }

  // RDS and EDS named by listeners and clusters come from the same directory. A name that
  // does not resolve rejects the resource naming it: a file source has nothing to wait for.
  void resolve() {
    for (auto it = listeners.begin(); it != listeners.end();) {
      auto& [index, listener] = it->second;
      std::optional<std::string> reason;
      for (size_t i = 0; i < listener.filter_chains.size() && !reason; ++i) {
        auto& http = listener.filter_chains[i].http;
        if (http.route_config || listener.filter_chains[i].tcp_proxy) continue;
        auto route = routes.find(http.route_config_name);
        if (route == routes.end()) {
          reason = "filter_chains[" + std::to_string(i) +
                   "].filters[0].typed_config.rds.route_config_name: no valid RouteConfiguration named '" +
                   http.route_config_name + "' in the resource files";
        } else {
          http.route_config = route->second.second;
        }
      }
      if (reason) {
        entries[index].reason = reason;
        it = listeners.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = clusters.begin(); it != clusters.end();) {
      auto& [index, cluster] = it->second;
      if (cluster.type == config::ClusterType::Eds) {
        auto cla = assignments.find(cluster.eds_service_name);
        if (cla == assignments.end()) {
          entries[index].reason = "eds_cluster_config: no valid ClusterLoadAssignment named '" +
                                  cluster.eds_service_name + "' in the resource files";
          it = clusters.erase(it);
          continue;
        }
        cluster.endpoints = cla->second.second.endpoints;
        cluster.localities = cla->second.second.localities;
      }
      ++it;
    }
  }

  std::string version() const {
    std::set<std::string> distinct;
    for (const auto& [file, v] : file_versions) distinct.insert(v);
    if (distinct.size() == 1) return *distinct.begin();
    std::string out;
    for (const auto& [file, v] : file_versions) out += (out.empty() ? "" : ",") + file + "=" + v;
    return out;
  }

  LoadResult finish() {
    resolve();
    LoadResult result;
    result.snapshot.version = version();
    auto listener_table = std::make_shared<config::ListenerTable>();
    for (auto& [name, entry] : listeners) {
      listener_table->by_name.emplace(name, std::make_shared<const config::Listener>(std::move(entry.second)));
    }
    auto cluster_table = std::make_shared<config::ClusterTable>();
    for (auto& [name, entry] : clusters) {
      cluster_table->by_name.emplace(name, std::make_shared<const config::Cluster>(std::move(entry.second)));
    }
    result.snapshot.listeners = std::move(listener_table);
    result.snapshot.clusters = std::move(cluster_table);
    auto tenant_table = std::make_shared<config::TenantTable>();
    for (auto& [name, entry] : tenants) {
      tenant_table->by_name.emplace(name, std::make_shared<const config::Tenant>(std::move(entry.second)));
    }
    result.snapshot.tenants = std::move(tenant_table);

    result.errors = file_errors;
    result.unread_files = unread_files;
    json accepted = json::array();
    json rejected = json::array();
    for (const auto& e : file_errors) rejected.push_back({{"file", e.file}, {"reason", e.reason}});
    for (auto& e : entries) {
      if (e.reason) {
        result.errors.push_back(ResourceError{e.file, e.name, e.type_url, *e.reason});
        rejected.push_back({{"file", e.file}, {"type_url", e.type_url}, {"name", e.name}, {"reason", *e.reason}});
      } else {
        result.sources[e.file].push_back(ResourceName{e.type_url, e.name});
        accepted.push_back({{"file", e.file},
                            {"version", e.version},
                            {"type_url", e.type_url},
                            {"name", e.name},
                            {"resource", std::move(e.resource)}});
      }
    }
    json dump = json::object();
    dump["version"] = result.snapshot.version;
    dump["accepted"] = std::move(accepted);
    dump["rejected"] = std::move(rejected);
    // Replacement of invalid UTF-8 keeps dump() from throwing on odd input.
    result.config_dump_json = dump.dump(2, ' ', false, json::error_handler_t::replace);
    return result;
  }
};

bool isResourceFile(const std::filesystem::path& path) {
  auto name = path.filename().string();
  if (name.empty() || name.front() == '.') return false;
  auto ext = path.extension();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

}  // namespace

Result<LoadResult> loadResourceDirectory(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return fail("resource directory does not exist", dir.string());
  if (!std::filesystem::is_directory(dir, ec)) return fail("not a directory", dir.string());
  std::vector<std::filesystem::path> files;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) return fail("cannot read the resource directory: " + ec.message(), dir.string());
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) return fail("cannot read the resource directory: " + ec.message(), dir.string());
    std::error_code file_ec;
    if (isResourceFile(it->path()) && it->is_regular_file(file_ec)) files.push_back(it->path());
  }
  if (ec) return fail("cannot read the resource directory: " + ec.message(), dir.string());
  std::sort(files.begin(), files.end());

  Loader loader;
  for (const auto& file : files) {
    // nlohmann/json throws on some malformed input (e.g. invalid UTF-8 on dump); keep it
    // to this file.
    try {
      loader.addFile(file);
    } catch (const std::exception& e) {
      loader.unreadFile(file.filename().string(), std::string("cannot process the file: ") + e.what());
    }
  }
  try {
    return loader.finish();
  } catch (const std::exception& e) {
    return fail(std::string("cannot assemble the configuration: ") + e.what(), dir.string());
  }
}

namespace {

// Puts back, into `table`, the previous version of each of `wanted` (resources of
// `type_url` the load lost, with the file at fault) that it does not have.
template <typename Table>
std::shared_ptr<const Table> keepPrevious(std::string_view type_url,
                                          const std::vector<std::pair<std::string, std::string>>& wanted,
                                          const std::shared_ptr<const Table>& table, const Table& previous,
                                          LoadResult& loaded, std::vector<ResourceName>& kept) {
  std::shared_ptr<Table> out;
  for (const auto& [name, file] : wanted) {
    if (table && table->by_name.contains(name)) continue;  // loaded anew (or a duplicate's first)
    auto it = previous.by_name.find(name);
    if (it == previous.by_name.end()) continue;
    if (!out) out = table ? std::make_shared<Table>(*table) : std::make_shared<Table>();
    if (!out->by_name.emplace(name, it->second).second) continue;  // wanted twice
    ResourceName resource{std::string(type_url), name};
    kept.push_back(resource);
    loaded.sources[file].push_back(std::move(resource));
  }
  return out ? out : table;
}

}  // namespace

std::vector<ResourceName> keepLastGood(LoadResult& loaded, const config::Snapshot& previous,
                                       const ResourceSources& previous_sources) {
  // What the load lost, by type: (name, file at fault).
  std::map<std::string_view, std::vector<std::pair<std::string, std::string>>> lost;
  for (const auto& e : loaded.errors) {
    if (!e.type_url.empty()) lost[messageNameOf(e.type_url)].emplace_back(e.resource, e.file);
  }
  for (const auto& file : loaded.unread_files) {
    auto it = previous_sources.find(file);
    if (it == previous_sources.end()) continue;
    for (const auto& r : it->second) lost[messageNameOf(r.type_url)].emplace_back(r.name, file);
  }
  std::vector<ResourceName> kept;
  auto& snap = loaded.snapshot;
  const auto& listeners = lost[messageNameOf(translate::kListenerType)];
  const auto& clusters = lost[messageNameOf(translate::kClusterType)];
  const auto& tenants = lost[messageNameOf(translate::kTenantType)];
  if (previous.listeners) {
    snap.listeners = keepPrevious(translate::kListenerType, listeners, snap.listeners, *previous.listeners, loaded, kept);
  }
  if (previous.clusters) {
    snap.clusters = keepPrevious(translate::kClusterType, clusters, snap.clusters, *previous.clusters, loaded, kept);
  }
  if (previous.tenants) {
    snap.tenants = keepPrevious(translate::kTenantType, tenants, snap.tenants, *previous.tenants, loaded, kept);
  }
  if (!kept.empty()) {
    json dump = json::parse(loaded.config_dump_json, nullptr, /*allow_exceptions=*/false);
    if (dump.is_object()) {
      json list = json::array();
      for (const auto& k : kept) list.push_back({{"type_url", k.type_url}, {"name", k.name}});
      dump["kept_last_good"] = std::move(list);
      loaded.config_dump_json = dump.dump(2, ' ', false, json::error_handler_t::replace);
    }
  }
  return kept;
}

}  // namespace culvert::xds::client
