#include "agent/sd_notify.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

namespace culvert::agent {
namespace {

TEST(ParseNotifySocket, FilesystemPathIncludesTerminator) {
  auto a = parseNotifySocket("/run/systemd/notify");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->addr.sun_family, AF_UNIX);
  EXPECT_STREQ(a->addr.sun_path, "/run/systemd/notify");
  EXPECT_EQ(a->len, offsetof(sockaddr_un, sun_path) + std::string("/run/systemd/notify").size() + 1);
}

TEST(ParseNotifySocket, AbstractNameHasLeadingNulAndExactLength) {
  auto a = parseNotifySocket("@culvert/notify");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->addr.sun_path[0], '\0');
  EXPECT_EQ(std::string(a->addr.sun_path + 1, 14), "culvert/notify");
  EXPECT_EQ(a->len, offsetof(sockaddr_un, sun_path) + 15);
}

TEST(ParseNotifySocket, RejectsRelativeEmptyAndOverlong) {
  for (std::string bad : {std::string(), std::string("run/notify"), "/" + std::string(200, 'x')}) {
    auto a = parseNotifySocket(bad);
    ASSERT_FALSE(a) << bad;
    EXPECT_EQ(a.error().where, "NOTIFY_SOCKET");
  }
}

TEST(WatchdogPingInterval, HalfTheTimeoutForThisProcess) {
  EXPECT_EQ(watchdogPingInterval("20000000", nullptr, 42), std::chrono::milliseconds(10000));
  EXPECT_EQ(watchdogPingInterval("20000000", "42", 42), std::chrono::milliseconds(10000));
  EXPECT_EQ(watchdogPingInterval("1000", nullptr, 42), std::chrono::milliseconds(1));
}

TEST(WatchdogPingInterval, OffWhenUnsetZeroMalformedOrForAnotherPid) {
  EXPECT_EQ(watchdogPingInterval(nullptr, nullptr, 42), std::nullopt);
  EXPECT_EQ(watchdogPingInterval("", nullptr, 42), std::nullopt);
  EXPECT_EQ(watchdogPingInterval("0", nullptr, 42), std::nullopt);
  EXPECT_EQ(watchdogPingInterval("12s", nullptr, 42), std::nullopt);
  EXPECT_EQ(watchdogPingInterval("20000000", "43", 42), std::nullopt);
}

// A receiving datagram socket standing in for systemd's notification socket.
class NotifyReceiver {
public:
  explicit NotifyReceiver(bool abstract) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    socklen_t len;
    if (abstract) {
      name_ = "@culvert-sd-notify-test-" + std::to_string(::getpid());
      std::memcpy(addr.sun_path + 1, name_.data() + 1, name_.size() - 1);
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size());
    } else {
      dir_ = std::filesystem::temp_directory_path() / ("culvert-sd-notify-" + std::to_string(::getpid()));
      std::filesystem::create_directories(dir_);
      name_ = (dir_ / "notify").string();
      std::memcpy(addr.sun_path, name_.data(), name_.size());
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size() + 1);
    }
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0;
    timeval tv{2, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~NotifyReceiver() {
    ::close(fd_);
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  bool bound() const { return bound_; }
  const std::string& name() const { return name_; }
  std::string receive() {
    char buf[512];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n < 0 ? std::string("<nothing>") : std::string(buf, static_cast<size_t>(n));
  }

private:
  int fd_ = -1;
  bool bound_ = false;
  std::string name_;
  std::filesystem::path dir_;
};

class SdNotifierEnv : public ::testing::Test {
protected:
  void TearDown() override {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::unsetenv("WATCHDOG_PID");
  }
};

TEST_F(SdNotifierEnv, DisabledWithoutNotifySocketAndNotifyIsANoOp) {
  ::unsetenv("NOTIFY_SOCKET");
  auto n = SdNotifier::fromEnvironment();
  ASSERT_TRUE(n);
  EXPECT_FALSE(n->enabled());
  EXPECT_TRUE(n->notify("READY=1"));
}

TEST_F(SdNotifierEnv, SendsEachStateAsOneDatagramToAPathSocket) {
  NotifyReceiver receiver(false);
  ASSERT_TRUE(receiver.bound());
  ::setenv("NOTIFY_SOCKET", receiver.name().c_str(), 1);
  ::setenv("WATCHDOG_USEC", "4000000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  auto n = SdNotifier::fromEnvironment();
  ASSERT_TRUE(n) << n.error().describe();
  ASSERT_TRUE(n->enabled());
  EXPECT_EQ(n->watchdogInterval(), std::chrono::milliseconds(2000));
  // Like sd_notify(3) with unset_environment: children do not inherit the socket.
  EXPECT_EQ(std::getenv("NOTIFY_SOCKET"), nullptr);
  EXPECT_EQ(std::getenv("WATCHDOG_USEC"), nullptr);
  ASSERT_TRUE(n->notify("READY=1\nSTATUS=serving"));
  ASSERT_TRUE(n->notify("STOPPING=1"));
  EXPECT_EQ(receiver.receive(), "READY=1\nSTATUS=serving");
  EXPECT_EQ(receiver.receive(), "STOPPING=1");
}

TEST_F(SdNotifierEnv, SendsToAnAbstractSocket) {
  NotifyReceiver receiver(true);
  ASSERT_TRUE(receiver.bound());
  ::setenv("NOTIFY_SOCKET", receiver.name().c_str(), 1);
  auto n = SdNotifier::fromEnvironment();
  ASSERT_TRUE(n) << n.error().describe();
  EXPECT_EQ(n->watchdogInterval(), std::nullopt);
  ASSERT_TRUE(n->notify("WATCHDOG=1"));
  EXPECT_EQ(receiver.receive(), "WATCHDOG=1");
}

TEST_F(SdNotifierEnv, MissingSocketIsAnErrorNamingNotifySocket) {
  ::setenv("NOTIFY_SOCKET", "/nonexistent/culvert/notify", 1);
  auto n = SdNotifier::fromEnvironment();
  ASSERT_TRUE(n);
  auto sent = n->notify("READY=1");
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().where, "NOTIFY_SOCKET");
}

TEST_F(SdNotifierEnv, MalformedNotifySocketIsAnError) {
  ::setenv("NOTIFY_SOCKET", "relative/path", 1);
  auto n = SdNotifier::fromEnvironment();
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().where, "NOTIFY_SOCKET");
}

}  // namespace
}  // namespace culvert::agent
