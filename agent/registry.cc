#include "agent/registry.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace culvert::agent {

using nlohmann::json;

namespace {

std::string errnoText(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

bool writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

common::Result<void> writeFileAtomically(const std::filesystem::path& path, std::string_view data) {
  auto tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return common::fail(errnoText("open"), tmp.string());
  bool ok = writeAll(fd, data) && ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(tmp.c_str());
    return common::fail(std::string("write: ") + std::strerror(err), tmp.string());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    return common::fail(std::string("rename: ") + std::strerror(err), path.string());
  }
  auto dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return common::fail(errnoText("open directory"), dir.string());
  ok = ::fsync(dfd) == 0;
  err = errno;
  ::close(dfd);
  if (!ok) return common::fail(std::string("fsync directory: ") + std::strerror(err), dir.string());
  return {};
}

std::string encodeRegistry(const std::vector<RegistryEntry>& entries) {
  json pods = json::array();
  for (const auto& e : entries) {
    pods.push_back({{"record", cni::toJson(e.record)},
                    {"netns_dev", e.netns_dev},
                    {"netns_ino", e.netns_ino},
                    {"tenant_id", e.tenant_id},
                    {"fail_mode", e.fail_mode}});
  }
  json j = {{"version", 1}, {"pods", std::move(pods)}};
  return j.dump(1, ' ', false, json::error_handler_t::replace) + "\n";
}

common::Result<std::vector<RegistryEntry>> decodeRegistry(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return common::fail("not a JSON object");
  if (!j.contains("version") || j["version"] != 1) return common::fail("unknown registry version", "version");
  if (!j.contains("pods") || !j["pods"].is_array()) return common::fail("expected a list", "pods");
  std::vector<RegistryEntry> out;
  for (size_t i = 0; i < j["pods"].size(); ++i) {
    const json& p = j["pods"][i];
    std::string where = "pods[" + std::to_string(i) + "]";
    if (!p.is_object() || !p.contains("record")) return common::fail("missing record", where);
    auto rec = cni::recordFromJson(p["record"]);
    if (!rec) return std::unexpected(common::nest(where + ".record", rec.error()));
    if (!p.contains("netns_dev") || !p["netns_dev"].is_number_unsigned() || !p.contains("netns_ino") ||
        !p["netns_ino"].is_number_unsigned()) {
      return common::fail("netns_dev and netns_ino must be unsigned integers", where);
    }
    uint32_t tenant_id = 0;
    if (p.contains("tenant_id")) {
      if (!p["tenant_id"].is_number_unsigned() || p["tenant_id"].get<uint64_t>() > UINT32_MAX) {
        return common::fail("tenant_id must be an unsigned 32-bit integer", where);
      }
      tenant_id = p["tenant_id"].get<uint32_t>();
    }
    std::string fail_mode;
    if (p.contains("fail_mode")) {
      if (!p["fail_mode"].is_string() || (p["fail_mode"] != "open" && p["fail_mode"] != "closed" && p["fail_mode"] != "")) {
        return common::fail("fail_mode must be \"open\" or \"closed\"", where);
      }
      fail_mode = p["fail_mode"].get<std::string>();
    }
    out.push_back({std::move(*rec), p["netns_dev"].get<uint64_t>(), p["netns_ino"].get<uint64_t>(), tenant_id,
                   std::move(fail_mode)});
  }
  return out;
}

std::optional<std::pair<uint64_t, uint64_t>> statPath(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return std::pair<uint64_t, uint64_t>(st.st_dev, st.st_ino);
}

Liveness partitionByLiveness(const std::vector<RegistryEntry>& entries, const StatFn& stat) {
  Liveness out;
  for (const auto& e : entries) {
    auto id = stat(e.record.netns_path);
    bool alive = id && id->first == e.netns_dev && id->second == e.netns_ino;
    (alive ? out.alive : out.dead).push_back(e);
  }
  return out;
}

Registry::Registry(std::filesystem::path state_dir) : dir_(std::move(state_dir)), path_(dir_ / "pods.json") {}

common::Result<std::vector<RegistryEntry>> Registry::load() const {
  std::error_code ec;
  if (!std::filesystem::exists(path_, ec)) return std::vector<RegistryEntry>{};
  std::ifstream in(path_);
  if (!in) return common::fail(errnoText("open"), path_.string());
  std::stringstream ss;
  ss << in.rdbuf();
  auto entries = decodeRegistry(ss.str());
  if (!entries) return std::unexpected(common::nest(path_.string(), entries.error()));
  return entries;
}

common::Result<void> Registry::save(const std::vector<RegistryEntry>& entries) const {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return common::fail("create state_dir: " + ec.message(), dir_.string());
  return writeFileAtomically(path_, encodeRegistry(entries));
}

}  // namespace culvert::agent
