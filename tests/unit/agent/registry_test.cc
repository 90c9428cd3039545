#include "agent/registry.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

namespace culvert::agent {
namespace {

RegistryEntry entry(const std::string& id, const std::string& netns, uint64_t dev, uint64_t ino) {
  RegistryEntry e;
  e.record.container_id = id;
  e.record.namespace_ = "shop";
  e.record.name = "pod-" + id;
  e.record.netns_path = netns;
  e.record.ips = {"10.244.0.2"};
  e.netns_dev = dev;
  e.netns_ino = ino;
  return e;
}

class RegistryTest : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("culvert-registry-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(RegistryTest, NoFileMeansNoPods) {
  Registry r(dir_ / "state");
  auto loaded = r.load();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().describe();
  EXPECT_TRUE(loaded->empty());
}

TEST_F(RegistryTest, SaveThenLoadRoundTrips) {
  Registry r(dir_ / "state");  // created on first save
  std::vector<RegistryEntry> pods = {entry("a", "/var/run/netns/a", 3, 4026532000ull),
                                     entry("b", "/var/run/netns/b", 3, 4026532001ull)};
  pods[1].record.fail_mode = "closed";
  pods[1].tenant_id = 42;  // kept so a restart gives the tenant the same BPF id
  pods[0].fail_mode = "closed";  // kept so a restart before any configuration keeps it
  ASSERT_TRUE(r.save(pods).has_value());
  auto loaded = r.load();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().describe();
  EXPECT_EQ(*loaded, pods);
  // No temp file is left behind.
  EXPECT_FALSE(std::filesystem::exists(r.path().string() + ".tmp"));
  ASSERT_TRUE(r.save({}).has_value());
  EXPECT_TRUE(r.load()->empty());
}

TEST_F(RegistryTest, AtomicWriteReplacesAndStaleTempIsHarmless) {
  std::filesystem::create_directories(dir_);
  auto path = dir_ / "f";
  // A crash between write and rename leaves a .tmp; the next write simply replaces it.
  std::ofstream(path.string() + ".tmp") << "half-written";
  ASSERT_TRUE(writeFileAtomically(path, "one").has_value());
  ASSERT_TRUE(writeFileAtomically(path, "two").has_value());
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "two");
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp"));
  EXPECT_FALSE(writeFileAtomically(dir_ / "missing-dir" / "f", "x").has_value());
}

TEST_F(RegistryTest, DamagedFileIsAnErrorNamingTheEntry) {
  EXPECT_FALSE(decodeRegistry("{").has_value());
  EXPECT_FALSE(decodeRegistry(R"({"version":2,"pods":[]})").has_value());
  auto bad = decodeRegistry(R"({"version":1,"pods":[{"record":{"container_id":"a"},"netns_dev":1,"netns_ino":2}]})");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().describe().find("pods[0].record"), std::string::npos) << bad.error().describe();
  auto text = encodeRegistry({entry("a", "/n", 1, 2)});
  auto no_ino = text.substr(0, text.find("\"netns_ino\"")) + "\"x\":0}]}";
  EXPECT_FALSE(decodeRegistry(no_ino).has_value()) << no_ino;
}

TEST_F(RegistryTest, AFileWithoutTenantIdsLoadsWithIdZeroAndABadIdIsAnError) {
  auto j = nlohmann::json::parse(encodeRegistry({entry("a", "/n", 1, 2)}));
  j["pods"][0].erase("tenant_id");  // as written before ids were kept
  auto loaded = decodeRegistry(j.dump());
  ASSERT_TRUE(loaded.has_value()) << j.dump();
  EXPECT_EQ(loaded->at(0).tenant_id, 0u);
  j["pods"][0]["tenant_id"] = -1;
  EXPECT_FALSE(decodeRegistry(j.dump()).has_value());
  j["pods"][0]["tenant_id"] = 1ull << 33;
  EXPECT_FALSE(decodeRegistry(j.dump()).has_value());
}

TEST_F(RegistryTest, AFileWithoutFailModesLoadsUnrecordedAndABadModeIsAnError) {
  auto j = nlohmann::json::parse(encodeRegistry({entry("a", "/n", 1, 2)}));
  j["pods"][0].erase("fail_mode");  // as written before modes were kept
  auto loaded = decodeRegistry(j.dump());
  ASSERT_TRUE(loaded.has_value()) << j.dump();
  EXPECT_EQ(loaded->at(0).fail_mode, "");
  j["pods"][0]["fail_mode"] = "shut";
  auto bad = decodeRegistry(j.dump());
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().describe().find("pods[0]"), std::string::npos) << bad.error().describe();
  j["pods"][0]["fail_mode"] = 1;
  EXPECT_FALSE(decodeRegistry(j.dump()).has_value());
}

TEST(RegistryLivenessTest, AliveOnlyWhileThePathNamesTheSameInode) {
  std::map<std::string, std::pair<uint64_t, uint64_t>> fs = {{"/run/netns/a", {3, 100}}, {"/run/netns/b", {3, 999}}};
  StatFn stat = [&](const std::string& p) -> std::optional<std::pair<uint64_t, uint64_t>> {
    auto it = fs.find(p);
    if (it == fs.end()) return std::nullopt;
    return it->second;
  };
  auto live = partitionByLiveness({entry("a", "/run/netns/a", 3, 100),   // same mount
                                   entry("b", "/run/netns/b", 3, 200),   // path reused by a new pod
                                   entry("c", "/run/netns/c", 3, 300)},  // mount removed
                                  stat);
  ASSERT_EQ(live.alive.size(), 1u);
  EXPECT_EQ(live.alive[0].record.container_id, "a");
  ASSERT_EQ(live.dead.size(), 2u);
  EXPECT_EQ(live.dead[0].record.container_id, "b");
  EXPECT_EQ(live.dead[1].record.container_id, "c");
}

TEST(RegistryLivenessTest, StatPathReadsRealFiles) {
  struct stat st{};
  ASSERT_EQ(::stat("/proc/self/ns/net", &st), 0);
  auto id = statPath("/proc/self/ns/net");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->second, st.st_ino);
  EXPECT_FALSE(statPath("/nonexistent/netns").has_value());
}

}  // namespace
}  // namespace culvert::agent
