#include "agent/ctl/ctl.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <mutex>
#include <sstream>

#include "agent/enrollment_server.h"
#include "tests/unit/agent/test_util.h"

namespace culvert::agent {
namespace {

using namespace std::chrono_literals;

common::Result<CtlCommand> parse(std::vector<std::string> args) { return parseCtlArgs(args); }

std::string parseError(std::vector<std::string> args) {
  auto r = parseCtlArgs(args);
  EXPECT_FALSE(r.has_value());
  return r ? std::string() : r.error().describe();
}

TEST(CtlParseTest, EnrollWithEveryFlag) {
  auto cmd = parse({"--socket", "/tmp/s.sock", "enroll", "--netns", "/var/run/netns/p1", "--namespace", "shop",
                    "--name=cart", "--container-id", "abc", "--ifname", "eth1", "--ip", "10.244.0.5", "--ip=fd00::5",
                    "--tenant", "team-a", "--fail-mode", "closed", "--pod-uid", "uid-1", "--exclude-port", "22",
                    "--exclude-cidr", "10.0.0.0/8", "--timeout", "500ms"});
  ASSERT_TRUE(cmd.has_value()) << cmd.error().describe();
  EXPECT_EQ(cmd->kind, CtlCommand::Kind::Enroll);
  EXPECT_EQ(cmd->socket, std::filesystem::path("/tmp/s.sock"));
  EXPECT_EQ(cmd->timeout, 500ms);
  EXPECT_FALSE(cmd->generated_container_id);
  const auto& r = cmd->request.record;
  EXPECT_EQ(cmd->request.op, cni::EnrollmentOp::Enroll);
  EXPECT_EQ(r.netns_path, "/var/run/netns/p1");
  EXPECT_EQ(r.namespace_, "shop");
  EXPECT_EQ(r.name, "cart");
  EXPECT_EQ(r.container_id, "abc");
  EXPECT_EQ(r.ifname, "eth1");
  EXPECT_EQ(r.ips, (std::vector<std::string>{"10.244.0.5", "fd00::5"}));
  EXPECT_EQ(r.tenant, "team-a");
  EXPECT_EQ(r.fail_mode, "closed");
  EXPECT_EQ(r.pod_uid, "uid-1");
  EXPECT_EQ(r.exclude_ports, (std::vector<uint16_t>{22}));
  EXPECT_EQ(r.exclude_cidrs, (std::vector<std::string>{"10.0.0.0/8"}));
}

TEST(CtlParseTest, EnrollGeneratesAContainerId) {
  auto cmd = parse({"enroll", "--netns", "/proc/1/ns/net", "--namespace", "ns", "--name", "p"});
  ASSERT_TRUE(cmd.has_value()) << cmd.error().describe();
  EXPECT_TRUE(cmd->generated_container_id);
  EXPECT_EQ(cmd->request.record.container_id.size(), 4u + 32u);
  EXPECT_EQ(cmd->request.record.container_id.rfind("ctl-", 0), 0u);
  EXPECT_EQ(cmd->request.record.ifname, "eth0");
  EXPECT_NE(generateContainerId(), generateContainerId());
}

TEST(CtlParseTest, EnrollErrorsNameTheFlag) {
  EXPECT_EQ(parseError({"enroll", "--namespace", "ns", "--name", "p"}), "enroll needs --netns");
  EXPECT_EQ(parseError({"enroll", "--netns", "/n", "--namespace", "ns", "--name", "p", "--ip", "nope"}),
            "--ip: not an IPv4 or IPv6 address: 'nope'");
  EXPECT_EQ(parseError({"enroll", "--netns", "/n", "--namespace", "ns", "--name", "p", "--fail-mode", "x"}),
            "--fail-mode: must be open or closed, got 'x'");
  EXPECT_EQ(parseError({"enroll", "--netns", "rel", "--namespace", "ns", "--name", "p"}),
            "--netns: must be an absolute path, got 'rel'");
  EXPECT_EQ(parseError({"enroll", "--netns", "/n", "--namespace", "ns", "--name", "p", "--exclude-port", "0"}),
            "--exclude-port: expected a port 1..65535, got '0'");
  EXPECT_EQ(parseError({"enroll", "--netns", "/n", "--namespace", "ns", "--name", "p", "--name", "q"}),
            "--name given more than once");
  EXPECT_EQ(parseError({"enroll", "--netns", "/n", "--namespace", "ns", "--name", "p", "--json"}),
            "unknown option --json for 'enroll'");
  EXPECT_EQ(parseError({"enroll", "--netns"}), "--netns needs a value");
}

TEST(CtlParseTest, Unenroll) {
  auto by_key = parse({"unenroll", "--container-id", "abc", "--ifname", "net1"});
  ASSERT_TRUE(by_key.has_value()) << by_key.error().describe();
  EXPECT_EQ(by_key->request, cni::EnrollmentRequest::unenrollByKey("abc", "net1"));
  auto default_if = parse({"unenroll", "--container-id", "abc"});
  ASSERT_TRUE(default_if.has_value());
  EXPECT_EQ(default_if->request.ifname, "eth0");
  auto by_netns = parse({"unenroll", "--netns", "/var/run/netns/x"});
  ASSERT_TRUE(by_netns.has_value());
  EXPECT_EQ(by_netns->request, cni::EnrollmentRequest::unenrollByNetns("/var/run/netns/x"));

  EXPECT_NE(parseError({"unenroll"}).find("unenroll needs"), std::string::npos);
  EXPECT_NE(parseError({"unenroll", "--container-id", "a", "--netns", "/x"}).find("not both"), std::string::npos);
  EXPECT_NE(parseError({"unenroll", "--netns", "/x", "--ifname", "eth0"}).find("--ifname goes with"), std::string::npos);
  EXPECT_EQ(parseError({"unenroll", "--container-id", "-x"}).rfind("--container-id: ", 0), 0u);
}

TEST(CtlParseTest, PodsVersionHelpAndGlobals) {
  auto pods = parse({"pods", "--json", "--config", "/etc/culvert/bootstrap.yaml"});
  ASSERT_TRUE(pods.has_value());
  EXPECT_EQ(pods->kind, CtlCommand::Kind::Pods);
  EXPECT_TRUE(pods->json);
  EXPECT_EQ(pods->config, std::filesystem::path("/etc/culvert/bootstrap.yaml"));
  EXPECT_EQ(parse({"--version"})->kind, CtlCommand::Kind::Version);
  EXPECT_EQ(parse({"pods", "--help"})->kind, CtlCommand::Kind::Help);
  EXPECT_EQ(parse({"pods", "--timeout", "3"})->timeout, 3s);
  EXPECT_EQ(parse({"pods", "--timeout", "2s"})->timeout, 2s);
  EXPECT_NE(parseError({"pods", "--timeout", "soon"}).find("--timeout"), std::string::npos);
  EXPECT_EQ(parseError({}), "no command given (expected enroll, unenroll, pods or capture)");
  EXPECT_EQ(parseError({"launch"}), "unknown command 'launch' (expected enroll, unenroll, pods or capture)");
  EXPECT_EQ(parseError({"pods", "extra"}), "unexpected argument 'extra'");
  EXPECT_EQ(parseError({"pods", "--json=yes"}), "--json takes no value");
}

TEST(CtlParseTest, CaptureTakesOnOffOrStatus) {
  for (const char* action : {"on", "off", "status"}) {
    auto c = parse({"capture", action});
    ASSERT_TRUE(c.has_value()) << c.error().describe();
    EXPECT_EQ(c->kind, CtlCommand::Kind::Capture);
    EXPECT_EQ(c->capture_action, action);
  }
  EXPECT_EQ(parseError({"capture"}), "capture needs on, off or status");
  EXPECT_EQ(parseError({"capture", "maybe"}), "capture takes on, off or status, got 'maybe'");
  EXPECT_EQ(parseError({"capture", "on", "off"}), "unexpected argument 'off'");
  EXPECT_EQ(parseError({"capture", "on", "--json"}), "unknown option --json for 'capture'");
}

// culvertctl against a real EnrollmentServer that keeps a registry.
class CtlRunTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto server = EnrollmentServer::create(
        loop_.dispatcher(), {.socket_path = socket_},
        [this](const cni::EnrollmentRequest& request, std::function<void(cni::EnrollmentResponse)> reply) {
          std::lock_guard lock(mutex_);
          switch (request.op) {
            case cni::EnrollmentOp::Enroll: pods_.push_back(request.record); break;
            case cni::EnrollmentOp::Unenroll: {
              auto before = pods_.size();
              std::erase_if(pods_, [&](const cni::EnrollmentRecord& r) {
                return request.netns_path.empty()
                           ? r.container_id == request.container_id && r.ifname == request.ifname
                           : r.netns_path == request.netns_path;
              });
              if (before == pods_.size()) {
                reply(cni::EnrollmentResponse::failure("not enrolled"));
                return;
              }
              break;
            }
            case cni::EnrollmentOp::List: {
              auto response = cni::EnrollmentResponse::success();
              response.pods = pods_;
              reply(response);
              return;
            }
          }
          reply(cni::EnrollmentResponse::success());
        });
    ASSERT_TRUE(server.has_value()) << server.error().describe();
    server_ = std::move(*server);
    loop_.start();
  }
  void TearDown() override {
    loop_.destroy(server_);
    loop_.stop();
  }
  int run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    return runCtl(args, out_, err_);
  }

  test::TempDir dir_;
  std::filesystem::path socket_ = dir_.path() / "cni.sock";
  test::LoopThread loop_;
  std::unique_ptr<EnrollmentServer> server_;
  std::mutex mutex_;
  std::vector<cni::EnrollmentRecord> pods_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(CtlRunTest, EnrollListUnenroll) {
  ASSERT_EQ(run({"--socket", socket_.string(), "enroll", "--netns", "/proc/1/ns/net", "--namespace", "shop", "--name",
                 "cart", "--ip", "10.244.0.9", "--tenant", "t1"}),
            0)
      << err_.str();
  std::string id;
  {
    std::lock_guard lock(mutex_);
    ASSERT_EQ(pods_.size(), 1u);
    id = pods_[0].container_id;
  }
  EXPECT_EQ(out_.str(), "enrolled shop/cart container_id=" + id + " ifname=eth0\n");

  ASSERT_EQ(run({"--socket", socket_.string(), "pods"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("NAMESPACE"), std::string::npos);
  EXPECT_NE(out_.str().find("cart"), std::string::npos);
  EXPECT_NE(out_.str().find("10.244.0.9"), std::string::npos);
  EXPECT_NE(out_.str().find(id), std::string::npos);

  ASSERT_EQ(run({"--socket", socket_.string(), "pods", "--json"}), 0);
  auto list = nlohmann::json::parse(out_.str());
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["tenant"], "t1");

  ASSERT_EQ(run({"--socket", socket_.string(), "unenroll", "--container-id", id}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "unenrolled container_id=" + id + " ifname=eth0\n");

  // The daemon refuses: exit 1 with its reason.
  EXPECT_EQ(run({"--socket", socket_.string(), "unenroll", "--netns", "/proc/1/ns/net"}), 1);
  EXPECT_EQ(err_.str(), "culvertctl: culvertd refused the request: not enrolled\n");
}

TEST_F(CtlRunTest, SocketFromTheBootstrapFile) {
  auto config = dir_.path() / "bootstrap.yaml";
  std::ofstream(config) << "enrollment:\n  socket: " << socket_.string() << "\n";
  ASSERT_EQ(run({"--config", config.string(), "pods"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("NAMESPACE"), std::string::npos);

  std::ofstream(config) << "enrollment:\n  sock: x\n";
  EXPECT_EQ(run({"--config", config.string(), "pods"}), 1);
  EXPECT_EQ(err_.str().rfind("culvertctl: " + config.string() + ": enrollment.sock: unknown key", 0), 0u) << err_.str();
}

TEST_F(CtlRunTest, Errors) {
  EXPECT_EQ(run({"--socket", (dir_.path() / "absent.sock").string(), "pods"}), 1);
  EXPECT_EQ(err_.str().rfind("culvertctl: ", 0), 0u);
  EXPECT_NE(err_.str().find("is culvertd running?"), std::string::npos) << err_.str();
  EXPECT_EQ(run({"enroll"}), 1);
  EXPECT_EQ(err_.str(), "culvertctl: enroll needs --netns (see culvertctl --help)\n");
  EXPECT_EQ(run({"--help"}), 0);
  EXPECT_NE(out_.str().find("usage: culvertctl"), std::string::npos);
}

int runBinary(const std::string& args, std::string& output) {
  std::string cmd = std::string(CULVERTCTL_BINARY) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) output.append(buf, n);
  int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(CtlBinaryTest, VersionAndExitCodes) {
  std::string out;
  EXPECT_EQ(runBinary("--version", out), 0);
  EXPECT_EQ(out, std::string("culvertctl ") + CULVERT_VERSION + "\n");
  out.clear();
  EXPECT_EQ(runBinary("frobnicate", out), 1);
  EXPECT_EQ(out.rfind("culvertctl: unknown command 'frobnicate'", 0), 0u) << out;
  out.clear();
  EXPECT_EQ(runBinary("--socket /nonexistent/culvert.sock pods", out), 1);
  EXPECT_EQ(out.rfind("culvertctl: /nonexistent/culvert.sock: cannot connect", 0), 0u) << out;
}

}  // namespace
}  // namespace culvert::agent
