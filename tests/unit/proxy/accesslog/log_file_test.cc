#include "proxy/accesslog/log_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "proxy/accesslog/access_log.h"

namespace culvert::accesslog {
namespace {

using namespace std::chrono_literals;

class LogFileTest : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("culvert_accesslog_" + std::to_string(::getpid()) + "_" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string read(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // Waits (bounded) until the writer thread put `expected` in the file.
  static bool waitFor(const std::filesystem::path& p, const std::string& expected) {
    for (int i = 0; i < 200; ++i) {
      if (read(p) == expected) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  std::filesystem::path dir_;
  common::StatsStore stats_;
};

TEST_F(LogFileTest, SamePathIsOneFileAndLinesArriveInOrderPerWorker) {
  LogManager manager({.shards = 2, .shard_limit = 1024, .flush_interval = 10ms}, stats_);
  auto path = (dir_ / "access.log").string();
  auto a = manager.file(path);
  EXPECT_EQ(a, manager.file(path));
  a->append(0, "one\n");
  a->append(0, "two\n");
  EXPECT_TRUE(waitFor(path, "one\ntwo\n")) << read(path);
}

TEST_F(LogFileTest, TheWriterThreadStartsWithTheFirstFile) {
  LogManager manager({.shards = 1, .shard_limit = 1024, .flush_interval = 10ms}, stats_);
  manager.reopen();  // SIGUSR1 with no access log: nothing to do, no thread
  manager.flushNow();
  EXPECT_FALSE(manager.writerRunning());
  auto path = (dir_ / "access.log").string();
  manager.file(path)->append(0, "line\n");
  EXPECT_TRUE(manager.writerRunning());
  EXPECT_TRUE(waitFor(path, "line\n")) << read(path);
}

TEST_F(LogFileTest, FullBufferDropsAndCounts) {
  // A long turn: nothing is written while the buffer fills.
  LogManager manager({.shards = 1, .shard_limit = 10, .flush_interval = 10s}, stats_);
  auto path = (dir_ / "access.log").string();
  auto f = manager.file(path);
  f->append(0, "12345\n");
  f->append(0, "67890\n");  // 12 bytes > 10: dropped
  f->append(0, "abc\n");    // fits
  EXPECT_EQ(f->dropped(), 1u);
  manager.flushNow();
  EXPECT_TRUE(waitFor(path, "12345\nabc\n")) << read(path);
  EXPECT_NE(stats_.renderPrometheus().find("culvert_access_log_dropped_total{path=\"" + path + "\"} 1"),
            std::string::npos)
      << stats_.renderPrometheus();
}

TEST_F(LogFileTest, ReopenFollowsLogrotate) {
  LogManager manager({.shards = 1, .shard_limit = 1024, .flush_interval = 10ms}, stats_);
  auto path = dir_ / "access.log";
  auto f = manager.file(path.string());
  f->append(0, "before\n");
  ASSERT_TRUE(waitFor(path, "before\n"));
  std::filesystem::rename(path, dir_ / "access.log.1");  // what logrotate does
  f->append(0, "still old\n");
  ASSERT_TRUE(waitFor(dir_ / "access.log.1", "before\nstill old\n"));
  manager.reopen();  // SIGUSR1
  for (int i = 0; i < 200 && !std::filesystem::exists(path); ++i) std::this_thread::sleep_for(10ms);
  f->append(0, "after\n");
  EXPECT_TRUE(waitFor(path, "after\n")) << read(path);
  EXPECT_EQ(read(dir_ / "access.log.1"), "before\nstill old\n");
}

TEST_F(LogFileTest, UnwritablePathCountsErrorsAndNeverBlocks) {
  LogManager manager({.shards = 1, .shard_limit = 1024, .flush_interval = 10ms}, stats_);
  auto f = manager.file((dir_ / "missing-dir" / "access.log").string());
  f->append(0, "lost\n");
  manager.flushNow();
  bool counted = false;
  for (int i = 0; i < 200 && !counted; ++i) {
    counted = stats_.renderPrometheus().find("culvert_access_log_write_errors_total{path=\"" + f->path() + "\"} 1") !=
              std::string::npos;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(counted) << stats_.renderPrometheus();
}

TEST_F(LogFileTest, SessionLogsFormatFilterAndQueue) {
  LogManager manager({.shards = 1, .shard_limit = 1024, .flush_interval = 10ms}, stats_);
  auto path = (dir_ / "access.log").string();
  auto errors_only = std::make_shared<AccessLogConfig>();
  errors_only->path = path;
  errors_only->formatter = *Formatter::text("%RESPONSE_CODE% %RESPONSE_FLAGS%\n", false);
  errors_only->filter = Filter{Filter::StatusCode{Filter::Op::Ge, 500}, std::nullopt};
  SessionLogs logs({errors_only}, &manager, 0);
  ASSERT_TRUE(logs.enabled());
  StreamInfo ok;
  ok.response_code = 200;
  logs.log(ok);
  StreamInfo failed;
  failed.response_code = 503;
  failed.flags.set(ResponseFlag::UpstreamConnectionFailure);
  logs.log(failed);
  EXPECT_TRUE(waitFor(path, "503 UF\n")) << read(path);
  EXPECT_FALSE(SessionLogs({errors_only}, nullptr, 0).enabled());
}

}  // namespace
}  // namespace culvert::accesslog
