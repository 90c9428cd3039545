#pragma once

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "proxy/common/error.h"
#include "proxy/common/stats.h"

namespace culvert::xds::client {

// Replaces `file` with `bytes` atomically: a temporary file in the same directory,
// fsync, rename over. Creates the directory if missing.
common::Result<void> writeFileAtomically(const std::filesystem::path& file, const std::string& bytes);

// Writes the durable last-good store on a thread of its own. Writing and fsyncing a
// 10,000-endpoint configuration took ~0.8 ms of the main thread's CPU per update, on a
// core it may share with a worker, and the main thread waited for the disk besides. Only
// the newest bytes matter, so bytes still waiting when newer ones arrive are replaced,
// not queued. Failures are counted in `failures` and logged.
class LastGoodWriter {
public:
  LastGoodWriter(std::filesystem::path file, common::Counter& failures);
  // Writes what is still waiting, then stops the thread.
  ~LastGoodWriter();
  LastGoodWriter(const LastGoodWriter&) = delete;
  LastGoodWriter& operator=(const LastGoodWriter&) = delete;

  // Thread-safe: hands `bytes` over as the file's next content.
  void write(std::string bytes);
  // Returns once everything handed over before the call is on disk (or failed).
  void flush();

private:
  void run();

  const std::filesystem::path file_;
  common::Counter& failures_;
  std::mutex mu_;
  std::condition_variable wake_;  // the thread: bytes waiting, or stopping
  std::condition_variable idle_;  // flush(): nothing waiting and nothing being written
  std::optional<std::string> waiting_;
  bool writing_ = false;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace culvert::xds::client
