#include "proxy/accesslog/access_log.h"

#include "proxy/accesslog/log_file.h"

namespace culvert::accesslog {

bool Filter::matches(const StreamInfo& info) const {
  if (status_code) {
    uint32_t code = info.response_code;
    switch (status_code->op) {
      case Op::Eq:
        if (code != status_code->value) return false;
        break;
      case Op::Ge:
        if (code < status_code->value) return false;
        break;
      case Op::Le:
        if (code > status_code->value) return false;
        break;
    }
  }
  if (response_flags) {
    bool match = response_flags->any() ? info.flags.intersects(*response_flags) : info.flags.any();
    if (!match) return false;
  }
  return true;
}

SessionLogs::SessionLogs(const AccessLogConfigs& configs, LogManager* manager, size_t worker_index)
    : worker_index_(worker_index) {
  if (manager == nullptr) return;
  for (const auto& config : configs) loggers_.push_back({config, manager->file(config->path)});
}

void SessionLogs::log(const StreamInfo& info) const {
  for (const auto& logger : loggers_) {
    if (logger.config->filter && !logger.config->filter->matches(info)) continue;
    logger.file->append(worker_index_, logger.config->formatter->format(info));
  }
}

}  // namespace culvert::accesslog
