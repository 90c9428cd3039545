#pragma once

#include <iosfwd>
#include <string>
#include <string_view>

namespace culvert::cni {

// CNI spec error codes used here (spec §"Error": 1-99 are reserved for the spec).
inline constexpr int kCniErrInvalidEnvironment = 4;  // e.g. an unusable CNI_COMMAND

// The CNI error object: {"cniVersion","code","msg","details"}.
std::string cniErrorJson(int code, std::string_view msg, std::string_view details);

// Runs one plugin invocation. `command` is CNI_COMMAND (nullptr when unset). Writes the
// result or error JSON to `out` and returns the process exit code.
int runPlugin(const char* command, std::istream& in, std::ostream& out);

}  // namespace culvert::cni
