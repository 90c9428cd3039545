#include "proxy/common/regex.h"

#include <re2/re2.h>

namespace culvert::common {

Regex::Regex(std::unique_ptr<re2::RE2> re) : re_(std::move(re)) {}
Regex::~Regex() = default;

Result<std::shared_ptr<const Regex>> Regex::compile(std::string_view pattern, int max_program_size) {
  re2::RE2::Options options;
  options.set_log_errors(false);
  auto re = std::make_unique<re2::RE2>(re2::StringPiece(pattern.data(), pattern.size()), options);
  if (!re->ok()) return fail("invalid regex '" + std::string(pattern) + "': " + re->error());
  if (re->ProgramSize() > max_program_size) {
    return fail("regex '" + std::string(pattern) + "' has RE2 program size " + std::to_string(re->ProgramSize()) +
                " > the maximum of " + std::to_string(max_program_size));
  }
  return std::shared_ptr<const Regex>(new Regex(std::move(re)));
}

bool Regex::fullMatch(std::string_view text) const {
  return re2::RE2::FullMatch(re2::StringPiece(text.data(), text.size()), *re_);
}

std::string Regex::replaceAll(std::string_view text, std::string_view substitution) const {
  std::string out(text);
  re2::RE2::GlobalReplace(&out, *re_, re2::StringPiece(substitution.data(), substitution.size()));
  return out;
}

Result<void> Regex::checkSubstitution(std::string_view substitution) const {
  std::string error;
  if (!re_->CheckRewriteString(re2::StringPiece(substitution.data(), substitution.size()), &error)) {
    return fail("substitution '" + std::string(substitution) + "': " + error);
  }
  return {};
}

const std::string& Regex::pattern() const { return re_->pattern(); }

}  // namespace culvert::common
