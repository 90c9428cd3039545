#pragma once

#include <nlohmann/json.hpp>

#include <string_view>
#include <vector>

#include "proxy/common/error.h"

namespace culvert::xds::client {

// Converts YAML text to JSON, one value per YAML document. Plain scalars become JSON
// booleans (true/false), null (null, ~, empty), integers and floats when they read as
// such (YAML 1.2 core schema); quoted scalars always stay strings, so "80" remains a
// string and 80 a number. Never throws.
common::Result<std::vector<nlohmann::json>> yamlToJson(std::string_view text);

}  // namespace culvert::xds::client
