#include "agent/cni_install.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace culvert::agent {
namespace {

using nlohmann::ordered_json;

const char* kConflist = R"({
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "disableCheck": false,
  "plugins": [
    {"type": "calico", "log_level": "info", "ipam": {"type": "calico-ipam"}},
    {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}
  ]
})";

ordered_json entry() { return {{"type", "culvert-cni"}, {"enrollment_socket", "/run/culvert/cni.sock"}}; }

TEST(CniInstallTest, InsertsAsLastPluginKeepingEveryOtherField) {
  auto out = insertCulvertEntry(kConflist, entry());
  ASSERT_TRUE(out.has_value()) << out.error().describe();
  ASSERT_TRUE(out->has_value());
  auto j = ordered_json::parse(**out);
  auto before = ordered_json::parse(kConflist);
  ASSERT_EQ(j["plugins"].size(), 3u);
  EXPECT_EQ(j["plugins"][2], entry());
  EXPECT_EQ(j["plugins"][0], before["plugins"][0]);
  EXPECT_EQ(j["plugins"][1], before["plugins"][1]);
  j["plugins"].erase(2);
  EXPECT_EQ(j, before);  // everything else, key order included (ordered_json compares order)
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"cniVersion", "name", "disableCheck", "plugins"}));
}

TEST(CniInstallTest, NeverDuplicatesAndKeepsCulvertLast) {
  auto once = insertCulvertEntry(kConflist, entry());
  ASSERT_TRUE(once && *once);
  auto twice = insertCulvertEntry(**once, entry());
  ASSERT_TRUE(twice.has_value());
  EXPECT_FALSE(twice->has_value());  // already as wanted: no rewrite
  // Another agent appended a plugin after ours, and a stale duplicate exists: one, last.
  auto j = ordered_json::parse(**once);
  j["plugins"].push_back({{"type", "bandwidth"}});
  j["plugins"].insert(j["plugins"].begin(), ordered_json{{"type", "culvert-cni"}, {"old", true}});
  auto fixed = insertCulvertEntry(j.dump(), entry());
  ASSERT_TRUE(fixed && *fixed);
  auto k = ordered_json::parse(**fixed);
  ASSERT_EQ(k["plugins"].size(), 4u);
  EXPECT_EQ(k["plugins"][2]["type"], "bandwidth");
  EXPECT_EQ(k["plugins"][3], entry());
}

TEST(CniInstallTest, RemoveTakesOnlyCulvertsEntry) {
  auto with = insertCulvertEntry(kConflist, entry());
  auto removed = removeCulvertEntry(**with);
  ASSERT_TRUE(removed && *removed);
  EXPECT_EQ(ordered_json::parse(**removed), ordered_json::parse(kConflist));
  auto none = removeCulvertEntry(kConflist);
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());
  EXPECT_FALSE(insertCulvertEntry("{", entry()).has_value());
  EXPECT_FALSE(insertCulvertEntry(R"({"plugins":3})", entry()).has_value());
}

class CniInstallFsTest : public ::testing::Test {
protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            ("culvert-install-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_ / "net.d");
    std::filesystem::create_directories(root_ / "usr-lib-cni");
    write(root_ / "culvert-cni-src", "#!/bin/sh\necho plugin\n");
    write(root_ / "net.d" / "10-calico.conflist", kConflist);
    write(root_ / "net.d" / "99-other.conflist", R"({"name":"x","plugins":[{"type":"bridge"}]})");
    options_.plugin_binary = root_ / "culvert-cni-src";
    options_.bin_dir = root_ / "usr-lib-cni";
    options_.conf_dir = root_ / "net.d";
    options_.entry = entry();
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  static void write(const std::filesystem::path& p, const std::string& s) { std::ofstream(p) << s; }
  static std::string read(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  std::filesystem::path root_;
  CniInstallOptions options_;
};

TEST_F(CniInstallFsTest, DetectsTheBinDirInOrder) {
  auto opt = root_ / "opt-cni-bin";
  auto found = detectCniBinDir({opt, root_ / "usr-lib-cni"});
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(*found, root_ / "usr-lib-cni");
  std::filesystem::create_directories(opt);
  EXPECT_EQ(*detectCniBinDir({opt, root_ / "usr-lib-cni"}), opt);
  EXPECT_FALSE(detectCniBinDir({root_ / "none"}).has_value());
}

// The image and the .deb ship /usr/sbin/culvertd and /usr/lib/cni/culvert-cni; a build
// tree or tarball has them side by side.
TEST_F(CniInstallFsTest, FindsThePluginNextToCulvertdOrInLibCni) {
  auto sbin = root_ / "usr" / "sbin";
  auto lib_cni = root_ / "usr" / "lib" / "cni";
  std::filesystem::create_directories(sbin);
  std::filesystem::create_directories(lib_cni);
  EXPECT_EQ(defaultPluginBinary(sbin / "culvertd"), sbin / "culvert-cni");  // none: names the first
  write(lib_cni / "culvert-cni", "plugin");
  EXPECT_EQ(defaultPluginBinary(sbin / "culvertd"), lib_cni / "culvert-cni");
  write(sbin / "culvert-cni", "plugin");
  EXPECT_EQ(defaultPluginBinary(sbin / "culvertd"), sbin / "culvert-cni");
}

TEST_F(CniInstallFsTest, InstallCopiesThePluginAndChainsIntoTheFirstConflist) {
  ASSERT_TRUE(installCni(options_).has_value());
  auto bin = root_ / "usr-lib-cni" / "culvert-cni";
  EXPECT_EQ(read(bin), "#!/bin/sh\necho plugin\n");
  struct stat st{};
  ASSERT_EQ(::stat(bin.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  auto j = ordered_json::parse(read(root_ / "net.d" / "10-calico.conflist"));
  EXPECT_EQ(j["plugins"].back(), entry());
  EXPECT_EQ(read(root_ / "net.d" / "99-other.conflist"), R"({"name":"x","plugins":[{"type":"bridge"}]})");
  // Again: nothing duplicated, no temp files left.
  ASSERT_TRUE(installCni(options_).has_value());
  EXPECT_EQ(ordered_json::parse(read(root_ / "net.d" / "10-calico.conflist"))["plugins"].size(), 3u);
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(root_ / "net.d")) files += e.is_regular_file();
  EXPECT_EQ(files, 2u);

  ASSERT_TRUE(uninstallCni(options_).has_value());
  EXPECT_FALSE(std::filesystem::exists(bin));
  EXPECT_EQ(ordered_json::parse(read(root_ / "net.d" / "10-calico.conflist")), ordered_json::parse(kConflist));
}

TEST_F(CniInstallFsTest, NoConflistIsAnError) {
  std::filesystem::remove_all(root_ / "net.d");
  std::filesystem::create_directories(root_ / "net.d");
  auto ok = installCni(options_);
  ASSERT_FALSE(ok.has_value());
  EXPECT_NE(ok.error().describe().find("no conflist"), std::string::npos);
}

TEST_F(CniInstallFsTest, WatchReinsertsWithinASecondOfARewrite) {
  ASSERT_TRUE(installCni(options_).has_value());
  std::atomic<bool> stop{false};
  std::thread watcher([&] { watchConflist(options_, stop, std::chrono::milliseconds(500)); });
  // Another agent rewrites the file without us (temp + rename, as they do).
  auto path = root_ / "net.d" / "10-calico.conflist";
  write(root_ / "net.d" / "tmp-other", kConflist);
  std::filesystem::rename(root_ / "net.d" / "tmp-other", path);
  auto t0 = std::chrono::steady_clock::now();
  bool back = false;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1)) {
    auto text = read(path);
    auto j = ordered_json::parse(text, nullptr, false);
    if (!j.is_discarded() && j["plugins"].size() == 3 && j["plugins"].back() == entry()) {
      back = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop = true;
  watcher.join();
  EXPECT_TRUE(back) << read(path);
  EXPECT_EQ(ordered_json::parse(read(path))["plugins"].size(), 3u);
}

}  // namespace
}  // namespace culvert::agent

namespace culvert::agent {
namespace {

TEST_F(CniInstallFsTest, CommandTakesTheEntryFromTheBootstrap) {
  write(root_ / "bootstrap.yaml", "enrollment:\n  socket: /run/cv-test/cni.sock\n  on_unreachable: allow\n");
  std::vector<std::string> args = {"culvertd",
                                   "install-cni",
                                   "--config",
                                   (root_ / "bootstrap.yaml").string(),
                                   "--plugin",
                                   options_.plugin_binary.string(),
                                   "--cni-bin-dir",
                                   options_.bin_dir->string(),
                                   "--cni-conf-dir",
                                   options_.conf_dir.string(),
                                   "--exempt-namespaces",
                                   "kube-system,infra"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  ASSERT_EQ(runCniInstallCommand(static_cast<int>(argv.size()), argv.data()), 0);
  auto j = ordered_json::parse(read(root_ / "net.d" / "10-calico.conflist"));
  auto want = ordered_json::parse(R"({"type":"culvert-cni","enrollment_socket":"/run/cv-test/cni.sock",)"
                                  R"("exempt_namespaces":["kube-system","infra"],"on_unreachable":"allow",)"
                                  R"("uncaptured_dir":"/run/cv-test/uncaptured"})");
  EXPECT_EQ(j["plugins"].back(), want) << j.dump(2);
  args[1] = "uninstall-cni";
  argv.clear();
  for (auto& a : args) argv.push_back(a.data());
  ASSERT_EQ(runCniInstallCommand(static_cast<int>(argv.size()), argv.data()), 0);
  EXPECT_EQ(ordered_json::parse(read(root_ / "net.d" / "10-calico.conflist")), ordered_json::parse(kConflist));
  EXPECT_FALSE(std::filesystem::exists(root_ / "usr-lib-cni" / "culvert-cni"));
}

}  // namespace
}  // namespace culvert::agent
