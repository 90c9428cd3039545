#include "cni/protocol/client.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <thread>

namespace culvert::cni {
namespace {

using namespace std::chrono_literals;

// A one-connection fake culvertd: accepts, reads a line, then does what the test says.
class FakeServer {
public:
  using Behaviour = std::function<void(int fd, const std::string& request_line)>;

  explicit FakeServer(Behaviour behaviour) {
    char tmpl[] = "/tmp/culvert-cni-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/cni.sock";
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 8), 0);
    thread_ = std::thread([this, behaviour = std::move(behaviour)] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string line;
      char ch;
      while (::recv(c, &ch, 1, 0) == 1 && ch != '\n') line.push_back(ch);
      behaviour(c, line);
      ::close(c);
    });
  }
  ~FakeServer() {
    ::shutdown(fd_, SHUT_RDWR);  // unblocks accept() if no client came
    thread_.join();
    ::close(fd_);
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

private:
  std::string dir_;
  std::string path_;
  int fd_ = -1;
  std::thread thread_;
};

void sendAll(int fd, const std::string& s) { ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size())); }

TEST(EnrollmentClientTest, SendsOneLineAndParsesTheReply) {
  std::string seen;
  {
    FakeServer server([&](int fd, const std::string& line) {
      seen = line;
      // The reply arrives in two pieces, with a trailing line the client must ignore.
      sendAll(fd, "{\"ok\":true,\"po");
      std::this_thread::sleep_for(20ms);
      sendAll(fd, "ds\":[]}\n{\"ok\":false}\n");
    });
    auto r = callEnrollment(server.path(), EnrollmentRequest::list(), 2s);
    ASSERT_TRUE(r.has_value()) << r.error().describe();
    EXPECT_TRUE(r->ok);
    ASSERT_TRUE(r->pods.has_value());
    EXPECT_TRUE(r->pods->empty());
  }
  EXPECT_EQ(seen, R"({"op":"list"})");
}

TEST(EnrollmentClientTest, FailureReplyIsAResponseNotAnError) {
  FakeServer server([](int fd, const std::string&) { sendAll(fd, "{\"ok\":false,\"error\":\"no such netns\"}\n"); });
  auto r = callEnrollment(server.path(), EnrollmentRequest::unenrollByNetns("/x"), 2s);
  ASSERT_TRUE(r.has_value()) << r.error().describe();
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->error, "no such netns");
}

TEST(EnrollmentClientTest, NoServer) {
  auto r = callEnrollment("/tmp/culvert-no-such-dir/cni.sock", EnrollmentRequest::list(), 1s);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().where, "/tmp/culvert-no-such-dir/cni.sock");
  EXPECT_NE(r.error().message.find("is culvertd running?"), std::string::npos) << r.error().describe();
}

TEST(EnrollmentClientTest, BadPath) {
  auto r = callEnrollment("/" + std::string(200, 'x'), EnrollmentRequest::list(), 1s);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("not a usable unix socket path"), std::string::npos);
}

TEST(EnrollmentClientTest, SilentServerTimesOutOnTime) {
  std::atomic<bool> release{false};
  FakeServer server([&](int, const std::string&) {
    while (!release) std::this_thread::sleep_for(5ms);
  });
  auto start = std::chrono::steady_clock::now();
  auto r = callEnrollment(server.path(), EnrollmentRequest::list(), 200ms);
  auto took = std::chrono::steady_clock::now() - start;
  release = true;
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("timed out after 200 ms waiting for the reply"), std::string::npos)
      << r.error().describe();
  EXPECT_GE(took, 190ms);
  EXPECT_LT(took, 1500ms);
}

TEST(EnrollmentClientTest, ServerClosesWithoutReply) {
  FakeServer server([](int, const std::string&) {});
  auto r = callEnrollment(server.path(), EnrollmentRequest::list(), 2s);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("closed the connection without replying"), std::string::npos) << r.error().describe();
}

TEST(EnrollmentClientTest, ServerClosesMidReply) {
  FakeServer server([](int fd, const std::string&) { sendAll(fd, "{\"ok\":tr"); });
  auto r = callEnrollment(server.path(), EnrollmentRequest::list(), 2s);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("in the middle of its reply"), std::string::npos) << r.error().describe();
}

TEST(EnrollmentClientTest, GarbageReply) {
  FakeServer server([](int fd, const std::string&) { sendAll(fd, "HTTP/1.1 200 OK\n"); });
  auto r = callEnrollment(server.path(), EnrollmentRequest::list(), 2s);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("bad reply from culvertd: invalid JSON"), std::string::npos) << r.error().describe();
}

}  // namespace
}  // namespace culvert::cni
