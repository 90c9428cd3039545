#include "proxy/accesslog/log_file.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace culvert::accesslog {

LogFile::LogFile(std::string path, size_t shards, size_t shard_limit, common::StatsStore& stats)
    : path_(std::move(path)), shard_limit_(shard_limit),
      dropped_(stats.counter("culvert_access_log_dropped_total", {{"path", path_}},
                             "Access-log lines dropped because the worker's buffer for the file was full")),
      write_errors_(stats.counter("culvert_access_log_write_errors_total", {{"path", path_}},
                                  "Failed opens and writes of an access-log file (the data is lost)")),
      written_(stats.counter("culvert_access_log_written_bytes_total", {{"path", path_}},
                             "Bytes written to an access-log file")) {
  for (size_t i = 0; i < std::max<size_t>(shards, 1); ++i) shards_.push_back(std::make_unique<Shard>());
}

LogFile::~LogFile() {
  if (owns_fd_ && fd_ >= 0) ::close(fd_);
}

void LogFile::append(size_t shard, std::string_view line) {
  auto& s = *shards_[shard % shards_.size()];
  std::lock_guard lock(s.mutex);
  if (s.lines.size() + line.size() > shard_limit_) {
    dropped_.inc();
    return;
  }
  s.lines.append(line);
}

bool LogFile::ensureOpen() {
  if (reopen_.exchange(false, std::memory_order_relaxed) && owns_fd_ && fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (fd_ >= 0) return true;
  if (path_ == "/dev/stdout") {
    fd_ = STDOUT_FILENO;
    return true;
  }
  if (path_ == "/dev/stderr") {
    fd_ = STDERR_FILENO;
    return true;
  }
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    write_errors_.inc();
    spdlog::warn("access log {}: cannot open: {}", path_, std::strerror(errno));
    return false;
  }
  owns_fd_ = true;
  return true;
}

void LogFile::writeAll(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      write_errors_.inc();
      spdlog::warn("access log {}: write failed: {}", path_, std::strerror(errno));
      return;
    }
    written_.inc(static_cast<uint64_t>(n));
    data.remove_prefix(static_cast<size_t>(n));
  }
}

bool LogFile::flush() {
  bool reopen = reopen_.load(std::memory_order_relaxed);
  bool wrote = false;
  for (auto& shard : shards_) {
    {
      std::lock_guard lock(shard->mutex);
      if (shard->lines.empty()) continue;
      swap_.swap(shard->lines);
    }
    if (ensureOpen()) writeAll(swap_);
    wrote = true;
    swap_.clear();
  }
  // A reopen with nothing to write still happens now, so the old file is let go.
  if (reopen && !wrote) ensureOpen();
  if (swap_.capacity() > shard_limit_) std::string().swap(swap_);
  return wrote;
}

LogManager::LogManager(Options options, common::StatsStore& stats) : options_(options), stats_(stats) {}

LogManager::~LogManager() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

bool LogManager::writerRunning() {
  std::lock_guard lock(mutex_);
  return thread_.joinable();
}

std::shared_ptr<LogFile> LogManager::file(const std::string& path) {
  std::lock_guard lock(mutex_);
  auto& f = files_[path];
  if (!f) f = std::make_shared<LogFile>(path, options_.shards, options_.shard_limit, stats_);
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  return f;
}

void LogManager::reopen() {
  {
    std::lock_guard lock(mutex_);
    for (auto& [path, f] : files_) f->requestReopen();
    kick_ = true;
  }
  wake_.notify_one();
}

void LogManager::flushNow() {
  {
    std::lock_guard lock(mutex_);
    kick_ = true;
  }
  wake_.notify_one();
}

void LogManager::run() {
  pthread_setname_np(pthread_self(), "access-log");  // as `ps -L` and perf show it
  std::vector<std::shared_ptr<LogFile>> files;
  bool stopping = false;
  while (!stopping) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, options_.flush_interval, [this] { return stop_ || kick_; });
      kick_ = false;
      stopping = stop_;
      files.clear();
      for (auto& [path, f] : files_) files.push_back(f);
    }
    for (auto& f : files) f->flush();
  }
}

}  // namespace culvert::accesslog
