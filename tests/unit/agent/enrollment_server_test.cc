#include "agent/enrollment_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fstream>
#include <mutex>
#include <vector>

#include "cni/protocol/client.h"
#include "tests/unit/agent/test_util.h"

namespace culvert::agent {
namespace {

using namespace std::chrono_literals;
using cni::EnrollmentRecord;

EnrollmentRecord record(std::string id) {
  EnrollmentRecord r;
  r.container_id = std::move(id);
  r.namespace_ = "shop";
  r.name = "cart";
  r.netns_path = "/proc/self/ns/net";
  r.ips = {"10.244.1.2"};
  return r;
}

class EnrollmentServerTest : public ::testing::Test {
protected:
  // A handler that records what it saw and answers at once (or as `answer` says).
  void startServer(EnrollmentServer::Handler handler = nullptr) {
    if (!handler) {
      handler = [this](const EnrollmentRequest& request, std::function<void(EnrollmentResponse)> reply) {
        {
          std::lock_guard lock(mutex_);
          seen_.push_back(request);
        }
        auto response = EnrollmentResponse::success();
        if (request.op == cni::EnrollmentOp::List) response.pods = std::vector<EnrollmentRecord>{record("listed")};
        reply(response);
      };
    }
    auto server = EnrollmentServer::create(loop_.dispatcher(), {.socket_path = socket_}, std::move(handler));
    ASSERT_TRUE(server.has_value()) << server.error().describe();
    server_ = std::move(*server);
    loop_.start();
  }
  void TearDown() override {
    loop_.destroy(server_);
    loop_.stop();
  }
  EnrollmentServer::Counters counters() {
    return loop_.call([this] { return server_->counters(); });
  }
  std::vector<EnrollmentRequest> seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }

  test::TempDir dir_;
  std::filesystem::path socket_ = dir_.path() / "run" / "culvert" / "cni.sock";  // parent not there yet
  test::LoopThread loop_;
  std::unique_ptr<EnrollmentServer> server_;
  std::mutex mutex_;
  std::vector<EnrollmentRequest> seen_;
};

TEST_F(EnrollmentServerTest, CreatesSocketWithMode0600AndServesTheClient) {
  startServer();
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // No private bind directory is left behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(socket_.parent_path()), {}), 1);

  auto r = cni::callEnrollment(socket_, EnrollmentRequest::enroll(record("c1")), 2s);
  ASSERT_TRUE(r.has_value()) << r.error().describe();
  EXPECT_TRUE(r->ok);
  auto list = cni::callEnrollment(socket_, EnrollmentRequest::list(), 2s);
  ASSERT_TRUE(list.has_value()) << list.error().describe();
  ASSERT_TRUE(list->pods.has_value());
  EXPECT_EQ(list->pods->at(0).container_id, "listed");

  auto requests = seen();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0], EnrollmentRequest::enroll(record("c1")));
  EXPECT_EQ(requests[1].op, cni::EnrollmentOp::List);
  EXPECT_EQ(counters().requests, 2u);
  EXPECT_EQ(counters().bad_requests, 0u);
}

TEST_F(EnrollmentServerTest, BadJsonIsAnsweredAndCountedAndTheConnectionGoesOn) {
  startServer();
  test::Client bad;
  ASSERT_TRUE(bad.connectUnix(socket_));
  ASSERT_TRUE(bad.send("{this is not json\n"));
  std::string line = bad.readLine();
  auto response = cni::parseResponse(line);
  ASSERT_TRUE(response.has_value()) << line;
  EXPECT_FALSE(response->ok);
  EXPECT_NE(response->error.find("invalid JSON"), std::string::npos) << response->error;

  // Invalid fields are also bad requests, with the field named.
  ASSERT_TRUE(bad.send(R"({"op":"enroll","record":{"container_id":"c","namespace":"n","name":"p","netns_path":"/x","exclude_ports":[0]}})"
                       "\n"));
  response = cni::parseResponse(bad.readLine());
  ASSERT_TRUE(response.has_value());
  EXPECT_NE(response->error.find("record.exclude_ports[0]"), std::string::npos) << response->error;

  // Another client meanwhile is served normally.
  auto other = cni::callEnrollment(socket_, EnrollmentRequest::list(), 2s);
  ASSERT_TRUE(other.has_value()) << other.error().describe();
  EXPECT_TRUE(other->ok);

  // And the same connection still serves a good request.
  ASSERT_TRUE(bad.send(cni::encodeRequest(EnrollmentRequest::unenrollByKey("c9"))));
  response = cni::parseResponse(bad.readLine());
  ASSERT_TRUE(response.has_value());
  EXPECT_TRUE(response->ok);

  auto c = counters();
  EXPECT_EQ(c.bad_requests, 2u);
  EXPECT_EQ(c.requests, 2u);
}

TEST_F(EnrollmentServerTest, PipelinedRequestsAreAnsweredInOrder) {
  startServer();
  test::Client client;
  ASSERT_TRUE(client.connectUnix(socket_));
  std::string batch;
  for (int i = 0; i < 20; ++i) batch += cni::encodeRequest(EnrollmentRequest::unenrollByKey("c" + std::to_string(i)));
  batch += "\n";  // blank lines are skipped
  batch += cni::encodeRequest(EnrollmentRequest::list());
  ASSERT_TRUE(client.send(batch));
  for (int i = 0; i < 21; ++i) {
    auto r = cni::parseResponse(client.readLine());
    ASSERT_TRUE(r.has_value()) << i;
    EXPECT_EQ(r->pods.has_value(), i == 20);
  }
  auto requests = seen();
  ASSERT_EQ(requests.size(), 21u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(requests[i].container_id, "c" + std::to_string(i));
}

TEST_F(EnrollmentServerTest, LastRequestWithoutNewlineBeforeHalfClose) {
  startServer();
  test::Client client;
  ASSERT_TRUE(client.connectUnix(socket_));
  std::string line = cni::encodeRequest(EnrollmentRequest::list());
  line.pop_back();
  ASSERT_TRUE(client.send(line));
  client.shutdownWrite();
  auto r = cni::parseResponse(client.readLine());
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->ok);
  EXPECT_TRUE(client.waitEof());
}

TEST_F(EnrollmentServerTest, AsyncReplyFromAnotherThread) {
  std::vector<std::thread> threads;
  std::mutex m;
  startServer([&](const EnrollmentRequest&, std::function<void(EnrollmentResponse)> reply) {
    std::lock_guard lock(m);
    threads.emplace_back([reply] {
      std::this_thread::sleep_for(50ms);
      auto r = EnrollmentResponse::success();
      r.extra["from"] = "worker";
      reply(r);
      reply(EnrollmentResponse::failure("second answer is ignored"));
    });
  });
  auto r = cni::callEnrollment(socket_, EnrollmentRequest::list(), 2s);
  ASSERT_TRUE(r.has_value()) << r.error().describe();
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->extra["from"], "worker");
  std::lock_guard lock(m);
  for (auto& t : threads) t.join();
}

TEST_F(EnrollmentServerTest, ReplyAfterTheClientLeftIsDropped) {
  std::function<void(EnrollmentResponse)> saved;
  std::mutex m;
  startServer([&](const EnrollmentRequest& request, std::function<void(EnrollmentResponse)> reply) {
    if (request.op != cni::EnrollmentOp::List) {
      reply(EnrollmentResponse::success());
      return;
    }
    std::lock_guard lock(m);
    saved = reply;
  });
  auto r = cni::callEnrollment(socket_, EnrollmentRequest::list(), 100ms);
  ASSERT_FALSE(r.has_value());  // timed out; the client closed its socket
  {
    std::lock_guard lock(m);
    ASSERT_TRUE(saved);
    saved(EnrollmentResponse::success());  // lands on a closed socket: no SIGPIPE, counted
  }
  for (int i = 0; i < 400 && counters().replies_dropped == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(counters().replies_dropped, 1u);
  for (int i = 0; i < 400 && loop_.call([this] { return server_->activeConnections(); }) != 0; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(loop_.call([this] { return server_->activeConnections(); }), 0u);
  // Still serving.
  auto again = cni::callEnrollment(socket_, EnrollmentRequest::unenrollByKey("c1"), 2s);
  ASSERT_TRUE(again.has_value()) << again.error().describe();
  EXPECT_TRUE(again->ok);
}

TEST_F(EnrollmentServerTest, HandlerExceptionBecomesAnError) {
  startServer([](const EnrollmentRequest&, std::function<void(EnrollmentResponse)>) {
    throw std::runtime_error("boom");
  });
  auto r = cni::callEnrollment(socket_, EnrollmentRequest::list(), 2s);
  ASSERT_TRUE(r.has_value()) << r.error().describe();
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->error, "internal error: boom");
}

TEST_F(EnrollmentServerTest, OversizedLineIsRejectedAndClosed) {
  startServer();
  test::Client client;
  ASSERT_TRUE(client.connectUnix(socket_));
  client.send(std::string(cni::kMaxRequestLineBytes + 4096, 'x'));
  auto r = cni::parseResponse(client.readLine());
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->ok);
  EXPECT_NE(r->error.find("exceeds"), std::string::npos);
  EXPECT_TRUE(client.waitEof());
  EXPECT_EQ(counters().bad_requests, 1u);
}

TEST_F(EnrollmentServerTest, RemovesItsSocketOnDestruction) {
  startServer();
  loop_.destroy(server_);
  EXPECT_FALSE(std::filesystem::exists(socket_));
}

// Binds a socket at `path` and closes it without unlinking: a crashed daemon's leftover.
void makeStaleSocket(const std::filesystem::path& path) {
  std::filesystem::create_directories(path.parent_path());
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
}

TEST_F(EnrollmentServerTest, ReplacesAStaleSocket) {
  makeStaleSocket(socket_);
  ASSERT_TRUE(std::filesystem::is_socket(socket_));
  startServer();
  auto r = cni::callEnrollment(socket_, EnrollmentRequest::list(), 2s);
  ASSERT_TRUE(r.has_value()) << r.error().describe();
}

TEST_F(EnrollmentServerTest, RefusesALiveSocketAndNonSockets) {
  startServer();
  test::LoopThread other;
  auto noop = [](const EnrollmentRequest&, std::function<void(EnrollmentResponse)>) {};
  auto second = EnrollmentServer::create(other.dispatcher(), {.socket_path = socket_}, noop);
  ASSERT_FALSE(second.has_value());
  EXPECT_NE(second.error().message.find("another process is listening"), std::string::npos);
  // The first server is untouched.
  EXPECT_TRUE(cni::callEnrollment(socket_, EnrollmentRequest::list(), 2s).has_value());

  auto file = dir_.path() / "not-a-socket";
  std::ofstream(file) << "precious";
  auto third = EnrollmentServer::create(other.dispatcher(), {.socket_path = file}, noop);
  ASSERT_FALSE(third.has_value());
  EXPECT_NE(third.error().message.find("not a socket"), std::string::npos);
  EXPECT_EQ(third.error().where, file.string());
  std::ifstream in(file);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST_F(EnrollmentServerTest, TooManyConnectionsAreRefused) {
  auto server = EnrollmentServer::create(
      loop_.dispatcher(), {.socket_path = socket_, .max_connections = 1},
      [](const EnrollmentRequest&, std::function<void(EnrollmentResponse)> reply) { reply(EnrollmentResponse::success()); });
  ASSERT_TRUE(server.has_value());
  server_ = std::move(*server);
  loop_.start();
  test::Client first;
  ASSERT_TRUE(first.connectUnix(socket_));
  ASSERT_TRUE(first.send(cni::encodeRequest(EnrollmentRequest::list())));
  EXPECT_FALSE(first.readLine().empty());
  test::Client second;
  ASSERT_TRUE(second.connectUnix(socket_));
  EXPECT_TRUE(second.waitEof());
  EXPECT_EQ(counters().connections_rejected, 1u);
}

}  // namespace
}  // namespace culvert::agent
