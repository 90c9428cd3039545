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
  EXPECT_EQ(j, nlohmann::json::parse(R"({"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]})"));
}

void expectCniError(const std::string& env, const std::string& msg_part) {
  Outcome run = runPlugin(env);
  EXPECT_EQ(run.exit_code, 1) << env;
  auto j = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << run.out;
  EXPECT_EQ(j["cniVersion"], "1.0.0");
  EXPECT_EQ(j["code"], 4);
  ASSERT_TRUE(j["msg"].is_string());
  EXPECT_NE(j["msg"].get<std::string>().find(msg_part), std::string::npos) << run.out;
}

TEST(CniPluginTest, UnimplementedCommandsAreSpecErrors) {
  expectCniError("CNI_COMMAND=ADD", "unsupported CNI_COMMAND ADD");
  expectCniError("CNI_COMMAND=DEL", "unsupported CNI_COMMAND DEL");
  expectCniError("CNI_COMMAND=CHECK", "unsupported CNI_COMMAND CHECK");
  Outcome run = runPlugin("CNI_COMMAND=ADD");
  EXPECT_NE(run.out.find("not yet implemented"), std::string::npos);
}

TEST(CniPluginTest, MissingOrUnknownCommand) {
  expectCniError("", "CNI_COMMAND is not set");
  expectCniError("CNI_COMMAND=JUMP", "unknown CNI_COMMAND JUMP");
}

}  // namespace
