#include "xds/client/dir_watcher.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace culvert::xds::client {
namespace {

class DirWatcherTest : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) / ("dirwatch_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(DirWatcherTest, ABurstOfChangesIsOneCallbackAfterTheSettleTime) {
  event::Dispatcher d("test");
  int calls = 0;
  auto w = DirWatcher::create(d, dir_, std::chrono::milliseconds(100), [&] {
    ++calls;
    // Quiet for a while after the first callback: no second one may follow.
  });
  ASSERT_TRUE(w) << w.error().describe();
  auto writer = d.createTimer([&] {
    std::ofstream(dir_ / "a.yaml.tmp") << "version_info: x\n";
    std::filesystem::rename(dir_ / "a.yaml.tmp", dir_ / "a.yaml");
    std::ofstream(dir_ / "b.yaml") << "version_info: y\n";
  });
  writer->enable(std::chrono::milliseconds(10));
  auto done = d.createTimer([&] { d.exit(); });
  done->enable(std::chrono::milliseconds(600));
  d.run();
  EXPECT_EQ(calls, 1);
}

TEST_F(DirWatcherTest, NoChangeNoCallback) {
  event::Dispatcher d("test");
  int calls = 0;
  auto w = DirWatcher::create(d, dir_, std::chrono::milliseconds(20), [&] { ++calls; });
  ASSERT_TRUE(w);
  auto done = d.createTimer([&] { d.exit(); });
  done->enable(std::chrono::milliseconds(200));
  d.run();
  EXPECT_EQ(calls, 0);
}

TEST_F(DirWatcherTest, MissingDirectoryIsAnError) {
  event::Dispatcher d("test");
  auto w = DirWatcher::create(d, dir_ / "missing", std::chrono::milliseconds(20), [] {});
  ASSERT_FALSE(w);
  EXPECT_NE(w.error().describe().find("missing"), std::string::npos);
}

}  // namespace
}  // namespace culvert::xds::client
