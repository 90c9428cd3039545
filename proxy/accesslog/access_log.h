#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/accesslog/formatter.h"
#include "proxy/accesslog/response_flags.h"
#include "proxy/accesslog/stream_info.h"

namespace culvert::accesslog {

class LogFile;
class LogManager;

// envoy.config.accesslog.v3.AccessLogFilter, the subset culvert evaluates.
struct Filter {
  enum class Op { Eq, Ge, Le };
  struct StatusCode {
    Op op = Op::Eq;
    uint32_t value = 0;
  };
  std::optional<StatusCode> status_code;
  // response_flag_filter: any of these flags; an empty list matches any flag (Envoy's rule).
  std::optional<ResponseFlags> response_flags;

  bool matches(const StreamInfo& info) const;
};

// One configured access log (HttpConnectionManager.access_log / TcpProxy.access_log).
struct AccessLogConfig {
  std::string name;
  std::string path;  // "/dev/stdout" for StdoutAccessLog, "/dev/stderr" for StderrAccessLog
  std::shared_ptr<const Formatter> formatter;
  std::optional<Filter> filter;
};

using AccessLogConfigs = std::vector<std::shared_ptr<const AccessLogConfig>>;

// A session's loggers with their files resolved. Formatting happens on the worker;
// the line goes to the worker's buffer of the file (LogFile::append), never to disk.
class SessionLogs {
public:
  SessionLogs() = default;
  SessionLogs(const AccessLogConfigs& configs, LogManager* manager, size_t worker_index);

  bool enabled() const { return !loggers_.empty(); }
  void log(const StreamInfo& info) const;

private:
  struct Bound {
    std::shared_ptr<const AccessLogConfig> config;
    std::shared_ptr<LogFile> file;
  };
  std::vector<Bound> loggers_;
  size_t worker_index_ = 0;
};

}  // namespace culvert::accesslog
