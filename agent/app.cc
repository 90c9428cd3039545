#include "agent/app.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "ebpf/loader/cgroup.h"
#include "proxy/network/socket.h"
#include "xds/client/file_source.h"

namespace culvert::agent {

namespace {
constexpr std::chrono::milliseconds kHealthProbeTimeout{1000};
}

App::App(Bootstrap bootstrap)
    : bootstrap_(std::move(bootstrap)),
      resource_errors_(stats_.counter("culvert_config_resource_rejected_total", {},
                                      "Resources rejected while loading configuration")) {}

App::~App() { stop(); }

common::Result<void> App::start() {
  uint64_t nofile = network::raiseFileLimit();
  spdlog::info("culvertd {} starting: node {}, {} workers, RLIMIT_NOFILE {}", CULVERT_VERSION, bootstrap_.node.id,
               effectiveWorkers(bootstrap_), nofile);

  ebpf::CaptureProgram::Options capture_options;
  capture_options.pin_root = bootstrap_.bpf.pin_root;
  capture_options.capture_port = bootstrap_.capture.port;
  capture_options.cgroup_path = bootstrap_.capture.cgroup;
  if (capture_options.cgroup_path.empty()) {
    auto root = ebpf::detectCgroup2Root();
    if (!root) return std::unexpected(common::nest("capture.cgroup", root.error()));
    capture_options.cgroup_path = *root;
  }
  auto capture = ebpf::CaptureProgram::load(capture_options);
  if (!capture) return std::unexpected(capture.error());
  capture_ = std::move(*capture);
  spdlog::info("capture attached at cgroup {}, maps pinned in {}", capture_->cgroupPath().string(),
               capture_->pinDir().string());

  hooks_ = std::make_unique<BpfSocketHooks>(*capture_);
  server_ = std::make_unique<server::Server>(main_, effectiveWorkers(bootstrap_),
                                             server::WorkerHooks{hooks_.get(), hooks_.get()}, stats_);
  server_->start();
  pods_ = std::make_unique<PodManager>(bootstrap_, *capture_, *server_, stats_);

  if (bootstrap_.xds.address.empty()) {
    if (auto loaded = loadResources(); !loaded) return loaded;
    // Reload on change (as on SIGHUP); the whole directory is re-read and published at once.
    auto watcher = xds::client::DirWatcher::create(main_, bootstrap_.resources.path, std::chrono::milliseconds(200),
                                                   [this] {
                                                     spdlog::info("resources.path changed: reloading");
                                                     if (auto ok = loadResources(); !ok) {
                                                       spdlog::error("reload: {}", ok.error().describe());
                                                     }
                                                   });
    if (watcher) {
      resources_watcher_ = std::move(*watcher);
    } else {
      spdlog::warn("resources.path is not watched (reload with SIGHUP): {}", watcher.error().describe());
    }
  } else if (auto ads = startAds(); !ads) {
    return ads;
  }

  EnrollmentServer::Options enrollment_options;
  enrollment_options.socket_path = bootstrap_.enrollment.socket;
  auto enrollment = EnrollmentServer::create(
      main_, enrollment_options, [this](const auto& request, auto reply) { handleEnrollment(request, std::move(reply)); });
  if (!enrollment) return std::unexpected(common::nest("enrollment.socket", enrollment.error()));
  enrollment_ = std::move(*enrollment);

  if (bootstrap_.admin.address || !bootstrap_.admin.socket.empty()) {
    AdminServer::Options admin_options;
    admin_options.address = bootstrap_.admin.address;
    admin_options.socket_path = bootstrap_.admin.socket;
    auto admin = AdminServer::create(main_, admin_options);
    if (!admin) return std::unexpected(common::nest("admin", admin.error()));
    admin_ = std::move(*admin);
    installAdminHandlers();
    if (admin_->boundAddress()) spdlog::info("admin listening on {}", admin_->boundAddress()->toString());
  }

  auto on_signal = [](uv_signal_t* handle, int signum) {
    auto* app = static_cast<App*>(handle->data);
    if (signum == SIGHUP) {
      if (app->ads_) return;  // the control plane is the configuration source
      if (auto ok = app->loadResources(); !ok) spdlog::error("reload: {}", ok.error().describe());
      return;
    }
    spdlog::info("received {}, stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    app->stop();
  };
  for (auto* s : {&sigterm_, &sigint_, &sighup_}) {
    uv_signal_init(main_.loop(), s);
    s->data = this;
  }
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_start(&sighup_, on_signal, SIGHUP);
  return {};
}

common::Result<void> App::loadResources() {
  const auto& dir = bootstrap_.resources.path;
  std::shared_ptr<const config::Snapshot> snapshot;
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    // No resources is a valid, empty configuration: the daemon runs and captures nothing.
    spdlog::warn("resources.path {} does not exist: serving an empty configuration", dir.string());
    snapshot = std::make_shared<config::Snapshot>();
    resources_dump_ = "null";
  } else {
    auto loaded = xds::client::loadResourceDirectory(dir);
    if (!loaded) return std::unexpected(common::nest("resources.path", loaded.error()));
    for (const auto& e : loaded->errors) {
      resource_errors_.inc();
      spdlog::error("resource rejected: {}: {} {}: {}", e.file, e.type_url, e.resource, e.reason);
    }
    snapshot = std::make_shared<config::Snapshot>(std::move(loaded->snapshot));
    resources_dump_ = loaded->config_dump_json;
  }
  return applySnapshot(std::move(snapshot));
}

common::Result<void> App::startAds() {
  auto target = xds::client::parseGrpcTarget(bootstrap_.xds.address);
  if (!target) return std::unexpected(common::nest("xds.address", target.error()));
  xds::client::AdsClientOptions options;
  options.address = bootstrap_.xds.address;
  options.node_id = bootstrap_.node.id;
  options.node_cluster = bootstrap_.node.cluster;
  options.delta = bootstrap_.xds.delta;
  options.locality_region = bootstrap_.node.locality.region;
  options.locality_zone = bootstrap_.node.locality.zone;
  options.locality_sub_zone = bootstrap_.node.locality.sub_zone;
  options.node_metadata = bootstrap_.node.metadata;
  options.state_file = bootstrap_.state_dir / "xds_last_good.bin";
  options.max_stale = std::chrono::seconds(bootstrap_.xds.max_stale_seconds);
  ads_ = std::make_unique<xds::client::AdsClient>(main_, stats_, options, *target, [this](auto snapshot) {
    if (auto ok = applySnapshot(std::move(snapshot)); !ok) spdlog::error("xds: {}", ok.error().describe());
  });
  spdlog::info("xds: control plane at {}; resources.path is not read", bootstrap_.xds.address);
  ads_->start();
  return {};
}

common::Result<void> App::applySnapshot(std::shared_ptr<const config::Snapshot> snapshot) {
  config_version_ = snapshot->version;
  auto published = server_->publish(snapshot);
  for (const auto& e : published.bind_errors) {
    resource_errors_.inc();
    spdlog::error("bound listener not served: {}", e.describe());
  }
  const auto& captured = published.captured;
  if (auto ok = capture_->setCapturedDestinations(captured); !ok) {
    return std::unexpected(common::nest("captured destinations", ok.error()));
  }
  config_loaded_ = true;
  spdlog::info("configuration {} loaded: {} listeners, {} clusters, {} captured destinations",
               config_version_.empty() ? "(unversioned)" : config_version_, snapshot->listeners->by_name.size(),
               snapshot->clusters->by_name.size(), captured.size());
  return {};
}

void App::handleEnrollment(const cni::EnrollmentRequest& request, std::function<void(cni::EnrollmentResponse)> reply) {
  common::Result<void> result;
  switch (request.op) {
    case cni::EnrollmentOp::Enroll:
      result = pods_->enroll(request.record);
      break;
    case cni::EnrollmentOp::Unenroll:
      result = request.netns_path.empty() ? pods_->unenrollByKey(request.container_id, request.ifname)
                                          : pods_->unenrollByNetns(request.netns_path);
      break;
    case cni::EnrollmentOp::List: {
      auto response = cni::EnrollmentResponse::success();
      response.pods = pods_->list();
      reply(std::move(response));
      return;
    }
  }
  if (!result) {
    spdlog::warn("{} failed: {}", cni::toString(request.op), result.error().describe());
    reply(cni::EnrollmentResponse::failure(result.error().describe()));
    return;
  }
  reply(cni::EnrollmentResponse::success());
}

void App::installAdminHandlers() {
  admin_->addHandler("/ready", [this](const AdminRequest&, auto reply) {
    if (!config_loaded_ || !capture_) {
      reply({503, "text/plain; charset=utf-8",
             ads_ ? "not ready: waiting for the control plane at " + bootstrap_.xds.address + "\n"
                  : std::string("not ready: configuration not loaded\n")});
      return;
    }
    std::string body = "ready\n";
    if (ads_ && ads_->stale()) {
      auto age = ads_->staleAge();
      if (age > ads_->maxStale()) {
        reply({503, "text/plain; charset=utf-8",
               "not ready: stale: the stored configuration is " + std::to_string(age.count()) +
                   "s old, beyond xds.max_stale, and the control plane has not confirmed it\n"});
        return;
      }
      body = "ready (stale: serving the stored configuration, " + std::to_string(age.count()) +
             "s old; the control plane has not confirmed it)\n";
    }
    server_->probeWorkers(kHealthProbeTimeout, [reply, body](bool ok) {
      reply(ok ? AdminResponse{200, "text/plain; charset=utf-8", body}
               : AdminResponse{503, "text/plain; charset=utf-8", "not ready: a worker did not answer\n"});
    });
  });
  admin_->addHandler("/healthz", [this](const AdminRequest&, auto reply) {
    server_->probeWorkers(kHealthProbeTimeout, [reply](bool ok) {
      reply(ok ? AdminResponse{200, "text/plain; charset=utf-8", "ok\n"}
               : AdminResponse{503, "text/plain; charset=utf-8", "a worker loop is stalled\n"});
    });
  });
  admin_->addHandler("/stats/prometheus", [this](const AdminRequest& request, auto reply) {
    auto tenant = request.query.find("tenant");
    reply({200, "text/plain; version=0.0.4; charset=utf-8",
           renderStats(tenant == request.query.end() ? std::string() : tenant->second)});
  });
  admin_->addHandler("/config_dump", [this](const AdminRequest&, auto reply) {
    reply({200, "application/json", configDump()});
  });
}

std::string App::renderStats(const std::string& tenant) {
  std::string out = stats_.renderPrometheus(tenant);
  if (!tenant.empty() || !capture_) return out;
  // Node-wide BPF counters, summed over CPUs at scrape time.
  auto c = capture_->counters();
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " +
           std::to_string(v) + "\n";
  };
  counter("culvert_capture_connect_captured_total", "Connects redirected to an in-pod listener", c.captured);
  counter("culvert_capture_connect_passthrough_total", "Connects from enrolled pods left untouched", c.passthrough);
  counter("culvert_capture_connect_refused_total", "Connects refused by fail mode closed", c.refused);
  counter("culvert_capture_connect_fail_open_total", "Connects passed by fail mode open", c.fail_open);
  return out;
}

std::string App::configDump() const {
  nlohmann::json dump;
  dump["bootstrap"] = formatBootstrap(bootstrap_);
  dump["version"] = config_version_;
  dump["resources"] = nlohmann::json::parse(resources_dump_, nullptr, false);
  if (ads_) dump["xds"] = nlohmann::json::parse(ads_->configDumpJson(), nullptr, false);
  nlohmann::json pods = nlohmann::json::array();
  if (pods_) {
    for (const auto& record : pods_->list()) pods.push_back(cni::toJson(record));
  }
  dump["pods"] = pods;
  return dump.dump(2) + "\n";
}

void App::run() {
  main_.run();
}

void App::stop() {
  if (stopping_) return;
  stopping_ = true;
  // Stop taking new work, then stop the data path, then detach capture: pods fall back
  // to their fail mode only once nothing can serve them any more.
  admin_.reset();
  ads_.reset();
  resources_watcher_.reset();
  enrollment_.reset();
  if (pods_) pods_->unenrollAll();
  if (server_) server_->stop();
  capture_.reset();
  for (auto* s : {&sigterm_, &sigint_, &sighup_}) {
    if (s->loop && !uv_is_closing(reinterpret_cast<uv_handle_t*>(s))) uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
  }
  main_.exit();
}

}  // namespace culvert::agent
