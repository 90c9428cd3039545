#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "proxy/common/error.h"

namespace re2 {
class RE2;
}

namespace culvert::common {

// A compiled RE2 expression (linear time, no backtracking: safe on request data). Built
// once when configuration is translated and shared, immutable, by every worker.
class Regex {
public:
  // Envoy's default for re2.max_program_size.error_level: larger programs are rejected,
  // since matching cost grows with program size and the pattern comes from config.
  static constexpr int kDefaultMaxProgramSize = 100;

  static Result<std::shared_ptr<const Regex>> compile(std::string_view pattern,
                                                      int max_program_size = kDefaultMaxProgramSize);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The whole of `text` matches (Envoy's safe_regex semantics).
  bool fullMatch(std::string_view text) const;
  // Every non-overlapping match in `text` replaced by `substitution` (\1..\9 refer to
  // capture groups); returns the result.
  std::string replaceAll(std::string_view text, std::string_view substitution) const;
  // Whether `substitution` refers only to groups this expression has.
  Result<void> checkSubstitution(std::string_view substitution) const;
  const std::string& pattern() const;

private:
  explicit Regex(std::unique_ptr<re2::RE2> re);
  std::unique_ptr<re2::RE2> re_;
};

}  // namespace culvert::common
