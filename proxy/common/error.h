#pragma once

#include <expected>
#include <string>
#include <utility>

namespace culvert::common {

// An error as a value: what went wrong, phrased for the person who has to act on it.
// `where` names the offending key, resource or peer when there is one.
struct Error {
  std::string message;
  std::string where;

  std::string describe() const { return where.empty() ? message : where + ": " + message; }
};

template <typename T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(std::string message, std::string where = {}) {
  return std::unexpected<Error>(Error{std::move(message), std::move(where)});
}

// Prefixes the location of an error that bubbles up through a nested structure:
// "filter_chains[0]" + "route_config.name" -> "filter_chains[0].route_config.name".
inline Error nest(std::string prefix, Error e) {
  e.where = e.where.empty() ? std::move(prefix) : std::move(prefix) + "." + e.where;
  return e;
}

}  // namespace culvert::common
