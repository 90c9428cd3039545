#include "xds/client/last_good_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace culvert::xds::client {
namespace {

class LastGoodWriterTest : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) / ("writer_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string read(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::filesystem::path dir_;
  common::Counter failures_;
};

TEST_F(LastGoodWriterTest, TheFileEndsWithTheNewestBytesHandedOver) {
  auto file = dir_ / "state" / "last_good.bin";  // the directory is created
  LastGoodWriter writer(file, failures_);
  for (int i = 0; i < 50; ++i) writer.write("version " + std::to_string(i));
  writer.flush();
  EXPECT_EQ(read(file), "version 49");
  EXPECT_FALSE(std::filesystem::exists(file.string() + ".tmp"));
  EXPECT_EQ(failures_.value(), 0u);
}

TEST_F(LastGoodWriterTest, StoppingWritesWhatIsStillWaiting) {
  auto file = dir_ / "last_good.bin";
  {
    LastGoodWriter writer(file, failures_);
    writer.write(std::string(1 << 20, 'a'));
    writer.write("the last one");
  }
  EXPECT_EQ(read(file), "the last one");
}

TEST_F(LastGoodWriterTest, AFailedWriteIsCountedAndTheNextOneStillLands) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "not-a-directory") << "x";
  LastGoodWriter broken(dir_ / "not-a-directory" / "last_good.bin", failures_);
  broken.write("lost");
  broken.flush();
  EXPECT_EQ(failures_.value(), 1u);

  LastGoodWriter writer(dir_ / "last_good.bin", failures_);
  writer.write("kept");
  writer.flush();
  EXPECT_EQ(read(dir_ / "last_good.bin"), "kept");
  EXPECT_EQ(failures_.value(), 1u);
}

TEST_F(LastGoodWriterTest, FlushWithNothingHandedOverReturns) {
  LastGoodWriter writer(dir_ / "last_good.bin", failures_);
  writer.flush();
  EXPECT_FALSE(std::filesystem::exists(dir_ / "last_good.bin"));
}

}  // namespace
}  // namespace culvert::xds::client
