#include "agent/validate.h"

#include <filesystem>

#include "xds/client/file_source.h"

namespace culvert::agent {

bool validateConfiguration(const Bootstrap& bootstrap, std::FILE* out, std::FILE* err) {
  if (!bootstrap.xds.address.empty()) {
    if (bootstrap.xds.tls.enabled()) {
      // The same loading culvertd does at start: files exist, parse, key matches cert.
      auto config = xdsTlsClientConfig(bootstrap.xds);
      if (!config) {
        std::fprintf(err, "culvertd: %s\n", config.error().describe().c_str());
        return false;
      }
      if (auto context = tls::ClientContext::load(*config); !context) {
        std::fprintf(err, "culvertd: xds.tls: %s\n", context.error().describe().c_str());
        return false;
      }
    }
    std::fprintf(out, "bootstrap valid; resources come from the control plane at %s%s (resources.path is not read)\n",
                 bootstrap.xds.address.c_str(), bootstrap.xds.tls.enabled() ? " over TLS" : "");
    return true;
  }
  const auto& dir = bootstrap.resources.path;
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    // Not an error: culvertd then runs on an empty configuration (and says so).
    std::fprintf(out, "bootstrap valid; resources.path %s does not exist (empty configuration)\n", dir.c_str());
    return true;
  }
  auto loaded = xds::client::loadResourceDirectory(dir);
  if (!loaded) {
    std::fprintf(err, "culvertd: resources.path: %s\n", loaded.error().describe().c_str());
    return false;
  }
  for (const auto& e : loaded->errors) {
    std::fprintf(err, "culvertd: %s: %s %s: %s\n", (dir / e.file).c_str(), e.type_url.c_str(), e.resource.c_str(),
                 e.reason.c_str());
  }
  if (!loaded->errors.empty()) return false;
  std::fprintf(out, "configuration valid: %zu listeners, %zu clusters\n", loaded->snapshot.listeners->by_name.size(),
               loaded->snapshot.clusters->by_name.size());
  return true;
}

}  // namespace culvert::agent
