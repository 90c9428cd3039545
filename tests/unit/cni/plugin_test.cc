#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace {

struct Outcome {
  int exit_code = -1;
  std::string out;
};

// Runs culvert-cni as a runtime would: a clean environment, config on stdin.
Outcome runPlugin(const std::string& env) {
  std::string cmd = "env -i " + env + " " CULVERT_CNI_BINARY " </dev/null";
  Outcome run;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return run;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) run.out.append(buf, n);
  int status = ::pclose(p);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

TEST(CniPluginTest, VersionReportsSupportedVersions) {
  Outcome run = runPlugin("CNI_COMMAND=VERSION");
  EXPECT_EQ(run.exit_code, 0);
  auto j = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << run.out;
  EXPECT_EQ(j, nlohmann::json::parse(R"({"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]})"));
}

void expectCniError(const std::string& env, int code, const std::string& msg_part) {
  Outcome run = runPlugin(env);
  EXPECT_EQ(run.exit_code, 1) << env;
  auto j = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << run.out;
  EXPECT_EQ(j["code"], code) << run.out;
  ASSERT_TRUE(j["msg"].is_string());
  EXPECT_NE(j["msg"].get<std::string>().find(msg_part), std::string::npos) << run.out;
}

TEST(CniPluginTest, MissingOrUnknownCommand) {
  expectCniError("", 4, "CNI_COMMAND is not set");
  expectCniError("CNI_COMMAND=JUMP", 4, "unknown CNI_COMMAND JUMP");
}

TEST(CniPluginTest, EmptyStdinIsADecodeError) {
  // stdin is /dev/null: not JSON, the spec's code 6.
  expectCniError("CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/x CNI_IFNAME=eth0", 6, "not valid JSON");
}

TEST(CniPluginTest, UnreachableCulvertdAtAddIsRetryable) {
  // A real exec against a socket path where nothing listens: code 11, bounded time.
  std::string conf = R"({"cniVersion":"1.0.0","name":"n","type":"culvert-cni",)"
                     R"("enrollment_socket":"/nonexistent/culvert.sock","prevResult":{"cniVersion":"1.0.0","ips":[]}})";
  std::string cmd = "echo '" + conf +
                    "' | env -i CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/proc/1/ns/net CNI_IFNAME=eth0 "
                    "CNI_ARGS='K8S_POD_NAMESPACE=app;K8S_POD_NAME=p' " CULVERT_CNI_BINARY " 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  auto j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["code"], 11) << out;
  EXPECT_EQ(j["cniVersion"], "1.0.0");
}

}  // namespace
