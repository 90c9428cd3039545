#include "cni/plugin/plugin.h"

#include <nlohmann/json.hpp>

#include <istream>
#include <ostream>

namespace culvert::cni {

namespace {

constexpr std::string_view kCniVersion = "1.0.0";

}  // namespace

std::string cniErrorJson(int code, std::string_view msg, std::string_view details) {
  nlohmann::json j = {{"cniVersion", kCniVersion}, {"code", code}, {"msg", msg}};
  if (!details.empty()) j["details"] = details;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int runPlugin(const char* command, std::istream& /*in*/, std::ostream& out) {
  std::string_view cmd = command == nullptr ? std::string_view() : std::string_view(command);
  if (cmd == "VERSION") {
    // VERSION needs nothing from stdin, so it does not read it (it may be a terminal).
    nlohmann::json j = {{"cniVersion", kCniVersion}, {"supportedVersions", {"0.4.0", "1.0.0", "1.1.0"}}};
    out << j.dump() << "\n";
    return 0;
  }
  // The spec has no "not implemented" code; 4 ("invalid necessary environment
  // variables, like CNI_COMMAND") is the spec's code for a CNI_COMMAND this plugin cannot
  // act on, and the details say which case it is.
  if (cmd.empty()) {
    out << cniErrorJson(kCniErrInvalidEnvironment, "CNI_COMMAND is not set", "") << "\n";
    return 1;
  }
  if (cmd == "ADD" || cmd == "DEL" || cmd == "CHECK" || cmd == "STATUS" || cmd == "GC") {
    out << cniErrorJson(kCniErrInvalidEnvironment, "unsupported CNI_COMMAND " + std::string(cmd),
                        "culvert-cni: " + std::string(cmd) + " is not yet implemented")
        << "\n";
    return 1;
  }
  out << cniErrorJson(kCniErrInvalidEnvironment, "unknown CNI_COMMAND " + std::string(cmd),
                      "expected ADD, DEL, CHECK, STATUS, GC or VERSION")
      << "\n";
  return 1;
}

}  // namespace culvert::cni
