// culvertd: the per-node capture and proxy daemon. Only argument handling lives here.
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "agent/app.h"
#include "agent/cni_install.h"
#include "agent/bootstrap.h"
#include "agent/validate.h"

namespace {

constexpr std::string_view kUsage = R"(usage: culvertd [--config FILE] [--validate] [--version]
       culvertd install-cni|uninstall-cni [--help | options]
       culvertd uninstall [--config FILE]

  --config FILE   bootstrap YAML (default: the embedded default configuration)
  uninstall       detach culvert's BPF programs, remove its pins under bpf.pin_root and
                  its state under state_dir (run with culvertd stopped)
  --validate      check the bootstrap and its resource files, then exit (0 = valid)
  --version       print the version and exit
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace culvert;
  std::string config_path;
  bool validate = false;
  if (argc > 1 && (std::string_view(argv[1]) == "install-cni" || std::string_view(argv[1]) == "uninstall-cni")) {
    return agent::runCniInstallCommand(argc, argv);
  }
  bool uninstall = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "uninstall" && i == 1) {
      uninstall = true;
    } else if (arg == "--version") {
      std::printf("culvertd %s\n", CULVERT_VERSION);
      return 0;
    } else if (arg == "--validate") {
      validate = true;
    } else if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg.starts_with("--config=")) {
      config_path = std::string(arg.substr(9));
    } else if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage.data(), stdout);
      return 0;
    } else {
      std::fprintf(stderr, "culvertd: unknown argument '%s'\n%s", argv[i], kUsage.data());
      return 2;
    }
  }

  auto bootstrap = config_path.empty() ? common::Result<agent::Bootstrap>(agent::embeddedDefaultBootstrap())
                                       : agent::loadBootstrapFile(config_path);
  if (!bootstrap) {
    std::fprintf(stderr, "culvertd: invalid bootstrap: %s\n", bootstrap.error().describe().c_str());
    return 1;
  }
  if (validate) return agent::validateConfiguration(*bootstrap, stdout, stderr) ? 0 : 1;
  if (uninstall) {
    auto done = agent::uninstall(*bootstrap);
    if (!done) {
      std::fprintf(stderr, "culvertd uninstall: %s\n", done.error().describe().c_str());
      return 1;
    }
    std::printf("%s\n", done->c_str());
    return 0;
  }

  if (auto ok = common::setupLogging(bootstrap->log.level, bootstrap->log.format); !ok) {
    std::fprintf(stderr, "culvertd: %s\n", ok.error().describe().c_str());
    return 1;
  }
  agent::App app(std::move(*bootstrap));
  if (auto started = app.start(); !started) {
    spdlog::critical("cannot start: {}", started.error().describe());
    return 1;
  }
  app.run();
  spdlog::info("stopped");
  return 0;
}
