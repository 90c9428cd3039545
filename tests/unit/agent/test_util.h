#pragma once

// Helpers shared by the agent unit tests: a temp dir, a Dispatcher on its own thread,
// and a plain blocking socket client.

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "proxy/common/socket_address.h"
#include "proxy/event/dispatcher.h"

namespace culvert::agent::test {

class TempDir {
public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "culvert-agent-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
};

// A Dispatcher run on a background thread. Set servers up before start() (the loop is
// not running yet) or through call(); stop() before destroying what runs on it.
class LoopThread {
public:
  LoopThread() : dispatcher_("test-main") {}
  ~LoopThread() { stop(); }
  event::Dispatcher& dispatcher() { return dispatcher_; }
  void start() {
    thread_ = std::thread([this] { dispatcher_.run(); });
  }
  void stop() {
    if (thread_.joinable()) {
      dispatcher_.exit();
      thread_.join();
    }
  }
  // Destroys a server on the loop thread while the loop still runs, so libuv completes
  // its handle closes (the Dispatcher does not run close callbacks after exit()).
  template <typename T>
  void destroy(std::unique_ptr<T>& object) {
    if (thread_.joinable()) {
      call([&] { object.reset(); });
    } else {
      object.reset();
    }
  }
  // Runs `fn` on the loop thread and returns its result.
  template <typename F>
  auto call(F fn) -> decltype(fn()) {
    using R = decltype(fn());
    std::promise<R> promise;
    auto future = promise.get_future();
    dispatcher_.post([&] {
      if constexpr (std::is_void_v<R>) {
        fn();
        promise.set_value();
      } else {
        promise.set_value(fn());
      }
    });
    return future.get();
  }

private:
  event::Dispatcher dispatcher_;
  std::thread thread_;
};

class Client {
public:
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connectUnix(const std::filesystem::path& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  bool connectTcp(const common::SocketAddress& address) {
    fd_ = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    return ::connect(fd_, address.sockaddr_ptr(), address.length()) == 0;
  }
  bool send(const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  void shutdownWrite() { ::shutdown(fd_, SHUT_WR); }
  // Reads until `stop` appears in what was read, EOF, or the timeout.
  std::string readUntil(const std::string& stop, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (stop.empty() || buffer_.find(stop) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
      char buf[8192];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        eof_ = true;
        break;
      }
      buffer_.append(buf, static_cast<size_t>(n));
    }
    std::string out;
    if (auto pos = stop.empty() ? std::string::npos : buffer_.find(stop); pos != std::string::npos) {
      out = buffer_.substr(0, pos + stop.size());
      buffer_.erase(0, pos + stop.size());
    } else {
      out.swap(buffer_);
    }
    return out;
  }
  std::string readLine(std::chrono::milliseconds timeout = std::chrono::seconds(5)) { return readUntil("\n", timeout); }
  std::string readAll(std::chrono::milliseconds timeout = std::chrono::seconds(5)) { return readUntil("", timeout); }
  // True when the peer closed (reads EOF within the timeout).
  bool waitEof(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    readAll(timeout);
    return eof_;
  }

private:
  int fd_ = -1;
  std::string buffer_;
  bool eof_ = false;
};

}  // namespace culvert::agent::test
