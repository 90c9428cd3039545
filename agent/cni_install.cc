#include "agent/cni_install.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "agent/registry.h"

namespace culvert::agent {

using nlohmann::ordered_json;

namespace {

bool isCulvert(const ordered_json& plugin) {
  return plugin.is_object() && plugin.contains("type") && plugin["type"] == kCulvertPluginType;
}

common::Result<ordered_json> parseConflist(std::string_view text) {
  ordered_json j = ordered_json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return common::fail("not a JSON object");
  if (!j.contains("plugins") || !j["plugins"].is_array()) return common::fail("expected a list of plugins", "plugins");
  return j;
}

// Conflists are conventionally indented by two spaces.
std::string render(const ordered_json& j) { return j.dump(2, ' ', false, ordered_json::error_handler_t::replace) + "\n"; }

common::Result<std::string> readFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return common::fail(std::string("cannot read: ") + std::strerror(errno), path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

common::Result<std::filesystem::path> detectCniBinDir(const std::vector<std::filesystem::path>& candidates) {
  std::error_code ec;
  for (const auto& c : candidates) {
    if (std::filesystem::is_directory(c, ec)) return c;
  }
  std::string list;
  for (const auto& c : candidates) list += (list.empty() ? "" : ", ") + c.string();
  return common::fail("no CNI bin directory found (looked for " + list + "); give --cni-bin-dir", "cni-bin-dir");
}

common::Result<std::filesystem::path> findConflist(const std::filesystem::path& conf_dir) {
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(conf_dir, ec)) {
    auto ext = e.path().extension();
    if (e.is_regular_file(ec) && (ext == ".conflist" || ext == ".conf")) files.push_back(e.path());
  }
  if (ec) return common::fail("cannot list: " + ec.message(), conf_dir.string());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    auto text = readFile(f);
    if (text && parseConflist(*text)) return f;
  }
  return common::fail("no conflist (a *.conflist with a plugins list) to chain into", conf_dir.string());
}

common::Result<std::optional<std::string>> insertCulvertEntry(std::string_view conflist, const ordered_json& entry) {
  auto j = parseConflist(conflist);
  if (!j) return std::unexpected(j.error());
  auto& plugins = (*j)["plugins"];
  size_t ours = static_cast<size_t>(std::count_if(plugins.begin(), plugins.end(), isCulvert));
  if (ours == 1 && isCulvert(plugins.back()) && plugins.back() == entry) return std::optional<std::string>();
  ordered_json kept = ordered_json::array();
  for (const auto& p : plugins) {
    if (!isCulvert(p)) kept.push_back(p);
  }
  kept.push_back(entry);
  plugins = std::move(kept);
  return std::optional<std::string>(render(*j));
}

common::Result<std::optional<std::string>> removeCulvertEntry(std::string_view conflist) {
  auto j = parseConflist(conflist);
  if (!j) return std::unexpected(j.error());
  auto& plugins = (*j)["plugins"];
  if (std::none_of(plugins.begin(), plugins.end(), isCulvert)) return std::optional<std::string>();
  ordered_json kept = ordered_json::array();
  for (const auto& p : plugins) {
    if (!isCulvert(p)) kept.push_back(p);
  }
  plugins = std::move(kept);
  return std::optional<std::string>(render(*j));
}

namespace {

common::Result<void> copyBinary(const std::filesystem::path& from, const std::filesystem::path& to) {
  auto tmp = to;
  tmp += ".culvert-tmp";
  std::error_code ec;
  std::filesystem::copy_file(from, tmp, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) return common::fail("copy: " + ec.message(), from.string() + " -> " + tmp.string());
  if (::chmod(tmp.c_str(), 0755) != 0 || ::rename(tmp.c_str(), to.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return common::fail(std::string("install: ") + std::strerror(err), to.string());
  }
  return {};
}

// Inserts the entry into the current conflist; true when the file was rewritten.
common::Result<bool> ensureEntry(const CniInstallOptions& options) {
  auto path = findConflist(options.conf_dir);
  if (!path) return std::unexpected(path.error());
  auto text = readFile(*path);
  if (!text) return std::unexpected(text.error());
  auto edited = insertCulvertEntry(*text, options.entry);
  if (!edited) return std::unexpected(common::nest(path->string(), edited.error()));
  if (!*edited) return false;
  if (auto ok = writeFileAtomically(*path, **edited); !ok) return std::unexpected(ok.error());
  return true;
}

}  // namespace

common::Result<void> installCni(const CniInstallOptions& options) {
  auto bin_dir = options.bin_dir ? common::Result<std::filesystem::path>(*options.bin_dir) : detectCniBinDir();
  if (!bin_dir) return std::unexpected(bin_dir.error());
  if (auto ok = copyBinary(options.plugin_binary, *bin_dir / kCulvertPluginType); !ok) return ok;
  auto changed = ensureEntry(options);
  if (!changed) return std::unexpected(changed.error());
  return {};
}

common::Result<void> uninstallCni(const CniInstallOptions& options) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(options.conf_dir, ec)) {
    auto ext = e.path().extension();
    if (ext != ".conflist" && ext != ".conf") continue;
    auto text = readFile(e.path());
    if (!text) continue;
    auto edited = removeCulvertEntry(*text);
    if (!edited || !*edited) continue;  // not a conflist, or nothing of ours
    if (auto ok = writeFileAtomically(e.path(), **edited); !ok) return ok;
  }
  auto bin_dir = options.bin_dir ? common::Result<std::filesystem::path>(*options.bin_dir) : detectCniBinDir();
  if (bin_dir) std::filesystem::remove(*bin_dir / kCulvertPluginType, ec);
  return {};
}

void watchConflist(const CniInstallOptions& options, const std::atomic<bool>& stop, std::chrono::milliseconds period) {
  int ifd = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (ifd >= 0 && ::inotify_add_watch(ifd, options.conf_dir.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
    spdlog::warn("install-cni: inotify on {}: {}; polling only", options.conf_dir.string(), std::strerror(errno));
  }
  std::string last_error;
  while (!stop.load()) {
    auto changed = ensureEntry(options);
    if (!changed) {
      if (changed.error().describe() != last_error) spdlog::warn("install-cni: {}", changed.error().describe());
      last_error = changed.error().describe();
    } else {
      last_error.clear();
      if (*changed) spdlog::info("install-cni: culvert-cni (re)inserted as the last plugin");
    }
    pollfd p{ifd, POLLIN, 0};
    if (::poll(&p, ifd >= 0 ? 1 : 0, static_cast<int>(period.count())) > 0) {
      char buf[4096];
      while (::read(ifd, buf, sizeof buf) > 0) {
      }
    }
  }
  if (ifd >= 0) ::close(ifd);
}

}  // namespace culvert::agent

#include <csignal>

#include "agent/bootstrap.h"

namespace culvert::agent {

namespace {

constexpr std::string_view kInstallUsage = R"(usage: culvertd install-cni|uninstall-cni [options]

  --config FILE            bootstrap YAML: culvert-cni talks to its enrollment.socket
  --cni-bin-dir DIR        default: /opt/cni/bin if it exists, else /usr/lib/cni
  --cni-conf-dir DIR       default: /etc/cni/net.d (the lexically first conflist is used)
  --plugin PATH            the culvert-cni to install (default: next to culvertd,
                           else <prefix>/lib/cni/culvert-cni)
  --exempt-namespaces A,B  namespaces never enrolled (default: kube-system,culvert-system)
  --allow-uncaptured       when culvertd is unreachable at ADD, start pods uncaptured
                           (logged and counted) instead of failing ADD retryably; the
                           bootstrap's enrollment.on_unreachable: allow does the same
  --watch                  install-cni: keep culvert's entry in place until SIGTERM
)";

std::atomic<bool> g_stop{false};

}  // namespace

std::filesystem::path defaultPluginBinary(const std::filesystem::path& culvertd_path) {
  auto dir = culvertd_path.parent_path();
  std::filesystem::path candidates[] = {dir / kCulvertPluginType, dir.parent_path() / "lib" / "cni" / kCulvertPluginType};
  std::error_code ec;
  for (const auto& c : candidates) {
    if (std::filesystem::is_regular_file(c, ec)) return c;
  }
  return candidates[0];
}

int runCniInstallCommand(int argc, char** argv) {
  std::string sub = argv[1];
  std::string config;
  CniInstallOptions options;
  std::error_code ec;
  options.plugin_binary = defaultPluginBinary(std::filesystem::read_symlink("/proc/self/exe", ec));
  bool watch = false;
  bool allow = false;
  std::optional<std::vector<std::string>> exempt;
  for (int i = 2; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 < argc) return std::string(argv[++i]);
      return std::nullopt;
    };
    std::optional<std::string> v;
    if (arg == "--watch") {
      watch = true;
    } else if (arg == "--allow-uncaptured") {
      allow = true;
    } else if (arg == "--help" || arg == "-h") {
      std::fputs(kInstallUsage.data(), stdout);
      return 0;
    } else if ((arg == "--config" || arg == "--cni-bin-dir" || arg == "--cni-conf-dir" || arg == "--plugin" ||
                arg == "--exempt-namespaces") &&
               (v = value())) {
      if (arg == "--config") config = *v;
      if (arg == "--cni-bin-dir") options.bin_dir = *v;
      if (arg == "--cni-conf-dir") options.conf_dir = *v;
      if (arg == "--plugin") options.plugin_binary = *v;
      if (arg == "--exempt-namespaces") {
        exempt.emplace();
        std::stringstream ss(*v);
        for (std::string ns; std::getline(ss, ns, ',');) {
          if (!ns.empty()) exempt->push_back(ns);
        }
      }
    } else {
      std::fprintf(stderr, "culvertd %s: bad argument '%s'\n%s", sub.c_str(), argv[i], kInstallUsage.data());
      return 2;
    }
  }
  auto bootstrap = config.empty() ? common::Result<Bootstrap>(embeddedDefaultBootstrap()) : loadBootstrapFile(config);
  if (!bootstrap) {
    std::fprintf(stderr, "culvertd %s: invalid bootstrap: %s\n", sub.c_str(), bootstrap.error().describe().c_str());
    return 1;
  }
  options.entry = {{"type", kCulvertPluginType}, {"enrollment_socket", bootstrap->enrollment.socket.string()}};
  if (exempt) options.entry["exempt_namespaces"] = *exempt;
  if (allow || bootstrap->enrollment.allow_uncaptured) {
    options.entry["on_unreachable"] = "allow";
    options.entry["uncaptured_dir"] = (bootstrap->enrollment.socket.parent_path() / "uncaptured").string();
  }
  if (sub == "uninstall-cni") {
    if (auto ok = uninstallCni(options); !ok) {
      std::fprintf(stderr, "culvertd uninstall-cni: %s\n", ok.error().describe().c_str());
      return 1;
    }
    return 0;
  }
  if (auto ok = installCni(options); !ok) {
    std::fprintf(stderr, "culvertd install-cni: %s\n", ok.error().describe().c_str());
    return 1;
  }
  if (!watch) return 0;
  std::signal(SIGTERM, [](int) { g_stop = true; });
  std::signal(SIGINT, [](int) { g_stop = true; });
  watchConflist(options, g_stop);
  return 0;
}

}  // namespace culvert::agent
