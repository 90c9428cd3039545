#include "xds/client/yaml_json.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>

namespace culvert::xds::client {

namespace {

bool isNull(const std::string& s) { return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL"; }

std::optional<bool> asBool(const std::string& s) {
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  return std::nullopt;
}

// Consumes [0-9]* from `i`; returns how many digits.
size_t digits(const std::string& s, size_t& i) {
  size_t start = i;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  return i - start;
}

// YAML 1.2 core schema: [-+]?[0-9]+
bool isInteger(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  return digits(s, i) > 0 && i == s.size();
}

// YAML 1.2 core schema: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool isFloat(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  size_t whole = digits(s, i);
  size_t fraction = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    fraction = digits(s, i);
  }
  if (whole == 0 && fraction == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    if (digits(s, i) == 0) return false;
  }
  return i == s.size();
}

nlohmann::json plainScalar(const std::string& s) {
  if (isNull(s)) return nullptr;
  if (auto b = asBool(s)) return *b;
  if (isInteger(s)) {
    const char* begin = s.data() + (s[0] == '+' ? 1 : 0);
    const char* end = s.data() + s.size();
    if (s[0] == '-') {
      int64_t v = 0;
      if (auto [p, ec] = std::from_chars(begin, end, v); ec == std::errc() && p == end) return v;
    } else {
      uint64_t v = 0;
      if (auto [p, ec] = std::from_chars(begin, end, v); ec == std::errc() && p == end) return v;
    }
    return s;  // Too large for 64 bits: protobuf's JSON parser reports it properly.
  }
  if (isFloat(s)) {
    double v = 0;
    if (auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v); ec == std::errc() && p == s.data() + s.size()) {
      return v;
    }
  }
  return s;
}

nlohmann::json convert(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      // yaml-cpp tags quoted scalars "!" and plain ones "?".
      if (node.Tag() == "!") return node.Scalar();
      return plainScalar(node.Scalar());
    case YAML::NodeType::Sequence: {
      auto out = nlohmann::json::array();
      for (const auto& item : node) out.push_back(convert(item));
      return out;
    }
    case YAML::NodeType::Map: {
      auto out = nlohmann::json::object();
      for (const auto& kv : node) out[kv.first.as<std::string>()] = convert(kv.second);
      return out;
    }
  }
  return nullptr;
}

}  // namespace

common::Result<std::vector<nlohmann::json>> yamlToJson(std::string_view text) {
  try {
    std::vector<nlohmann::json> out;
    for (const auto& doc : YAML::LoadAll(std::string(text))) out.push_back(convert(doc));
    return out;
  } catch (const YAML::Exception& e) {
    return common::fail(std::string("invalid YAML: ") + e.what());
  } catch (const std::exception& e) {
    return common::fail(std::string("cannot convert YAML: ") + e.what());
  }
}

}  // namespace culvert::xds::client
