#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "proxy/common/stats.h"

namespace culvert::accesslog {

// One access-log destination (a file path, or stdout/stderr), shared by every logger that
// names it. Workers append finished lines to their own bounded buffer (a mutex that only
// the writer thread ever contends for, and only to swap the buffer out); the writer
// thread does every open() and write(). A full buffer drops the line and counts it: a
// slow disk never blocks a worker.
class LogFile {
public:
  LogFile(std::string path, size_t shards, size_t shard_limit, common::StatsStore& stats);
  ~LogFile();

  // From worker `shard` (any value works; it is taken modulo the shard count).
  void append(size_t shard, std::string_view line);
  const std::string& path() const { return path_; }
  uint64_t dropped() const { return dropped_.value(); }

  // Writer thread only.
  // Writes what the shards hold; true when something was written.
  bool flush();
  void requestReopen() { reopen_.store(true, std::memory_order_relaxed); }

private:
  struct alignas(64) Shard {
    std::mutex mutex;
    std::string lines;
  };
  bool ensureOpen();
  void writeAll(std::string_view data);

  const std::string path_;
  const size_t shard_limit_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::string swap_;  // writer's buffer, swapped with a shard's
  int fd_ = -1;
  bool owns_fd_ = false;
  std::atomic<bool> reopen_{false};
  common::Counter& dropped_;
  common::Counter& write_errors_;
  common::Counter& written_;
};

// Owns every LogFile and the writer thread, which starts with the first file: a daemon
// without access logs has no thread waking every flush interval. Files open once per
// path, however many listeners and workers log to them; a path nothing references any
// more stays open until the manager stops (paths are few).
class LogManager {
public:
  struct Options {
    size_t shards = 1;                     // one per worker
    // Bytes buffered per worker and file between two writer turns: at the default turn
    // of 50 ms, 4 MiB lets one worker log about 80 MiB/s before lines drop.
    size_t shard_limit = 4 * 1024 * 1024;
    std::chrono::milliseconds flush_interval{50};
  };
  LogManager(Options options, common::StatsStore& stats);
  ~LogManager();  // flushes what is buffered, joins the writer
  // Whether the writer thread started (with the first file).
  bool writerRunning();

  // Thread-safe; the same LogFile for the same path.
  std::shared_ptr<LogFile> file(const std::string& path);
  // Reopen every file at the writer's next turn (SIGUSR1, after logrotate moved them).
  void reopen();
  // Wakes the writer now (tests, shutdown).
  void flushNow();

private:
  void run();

  Options options_;
  common::StatsStore& stats_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool kick_ = false;
  std::map<std::string, std::shared_ptr<LogFile>> files_;
  std::thread thread_;  // guarded by mutex_ until the destructor
};

}  // namespace culvert::accesslog
