#include "agent/admin/admin_server.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <mutex>

#include "tests/unit/agent/test_util.h"

namespace culvert::agent {
namespace {

using namespace std::chrono_literals;

struct HttpResponse {
  int status = 0;
  std::string head;
  std::string body;
};

HttpResponse parseHttp(const std::string& raw) {
  HttpResponse r;
  auto end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) return r;
  r.status = std::stoi(raw.substr(9, 3));
  r.head = raw.substr(0, end);
  r.body = raw.substr(end + 4);
  return r;
}

class AdminServerTest : public ::testing::Test {
protected:
  void start(AdminServer::Options options) {
    auto server = AdminServer::create(loop_.dispatcher(), std::move(options));
    ASSERT_TRUE(server.has_value()) << server.error().describe();
    server_ = std::move(*server);
    server_->addHandler("/echo", [](const AdminRequest& request, AdminServer::Reply reply) {
      std::string body = request.method + " " + request.path + "\n";
      for (const auto& [k, v] : request.query) body += k + "=" + v + "\n";
      reply(AdminResponse{200, "text/plain", body});
    });
    server_->addHandler("/json", [](const AdminRequest&, AdminServer::Reply reply) {
      reply(AdminResponse{200, "application/json", "{\"ok\":true}"});
    });
    loop_.start();
  }
  void startTcp(AdminServer::Options options = {}) {
    options.address = common::SocketAddress::parse("127.0.0.1", 0).value();
    start(std::move(options));
  }
  void TearDown() override {
    loop_.destroy(server_);
    loop_.stop();
  }
  HttpResponse get(const std::string& request) {
    test::Client client;
    EXPECT_TRUE(client.connectTcp(*server_->boundAddress()));
    client.send(request);
    return parseHttp(client.readAll());
  }
  AdminServer::Counters counters() {
    return loop_.call([this] { return server_->counters(); });
  }

  test::TempDir dir_;
  test::LoopThread loop_;
  std::unique_ptr<AdminServer> server_;
};

TEST_F(AdminServerTest, ServesGetOverTcpOnAnEphemeralPort) {
  startTcp();
  ASSERT_TRUE(server_->boundAddress().has_value());
  EXPECT_NE(server_->boundAddress()->port(), 0);
  EXPECT_EQ(server_->boundAddress()->ip(), "127.0.0.1");
  auto r = get("GET /echo?b=x%20y&a=1&flag&c=p+q HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "GET /echo\na=1\nb=x y\nc=p q\nflag=\n");
  EXPECT_NE(r.head.find("Content-Type: text/plain\r\n"), std::string::npos) << r.head;
  EXPECT_NE(r.head.find("Content-Length: " + std::to_string(r.body.size())), std::string::npos) << r.head;
  EXPECT_NE(r.head.find("Connection: close"), std::string::npos);

  auto j = get("GET /json HTTP/1.0\r\n\r\n");
  EXPECT_EQ(j.status, 200);
  EXPECT_EQ(j.body, "{\"ok\":true}");
  EXPECT_NE(j.head.find("application/json"), std::string::npos);
  EXPECT_EQ(counters().requests, 2u);
}

TEST_F(AdminServerTest, UnknownPathIs404) {
  startTcp();
  auto r = get("GET /nope HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("/nope"), std::string::npos);
  // The query is not part of the route.
  EXPECT_EQ(get("GET /json?x=1 HTTP/1.1\r\n\r\n").status, 200);
  EXPECT_EQ(get("GET /json/ HTTP/1.1\r\n\r\n").status, 404);
}

TEST_F(AdminServerTest, OnlyGet) {
  startTcp();
  for (const char* method : {"POST", "PUT", "DELETE", "HEAD"}) {
    auto r = get(std::string(method) + " /echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    EXPECT_EQ(r.status, 405) << method;
    EXPECT_NE(r.head.find("Allow: GET"), std::string::npos) << method;
  }
}

TEST_F(AdminServerTest, MalformedRequestsAre400) {
  startTcp();
  EXPECT_EQ(get("garbage\r\n\r\n").status, 400);
  EXPECT_EQ(get("GET /echo HTTP/1.1\r\nBad Header\r\n\r\n").status, 400);
  EXPECT_EQ(get("GET http://host/echo HTTP/1.1\r\n\r\n").status, 400);
  EXPECT_EQ(get("GET /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").status, 400);
  EXPECT_EQ(counters().bad_requests, 4u);
}

TEST_F(AdminServerTest, OversizedRequestIs413) {
  startTcp({.max_request_bytes = 1024});
  std::string big = "GET /echo HTTP/1.1\r\nX-Pad: " + std::string(4000, 'a') + "\r\n\r\n";
  EXPECT_EQ(get(big).status, 413);
  // A much larger flood still gets the answer rather than a reset.
  std::string flood = "GET /echo HTTP/1.1\r\nX-Pad: " + std::string(200'000, 'a');
  EXPECT_EQ(get(flood).status, 413);
  // Within the limit is fine.
  EXPECT_EQ(get("GET /echo HTTP/1.1\r\nX-Pad: " + std::string(500, 'a') + "\r\n\r\n").status, 200);
}

TEST_F(AdminServerTest, SlowRequestTimesOutWith408) {
  startTcp({.request_timeout = 200ms});
  test::Client client;
  ASSERT_TRUE(client.connectTcp(*server_->boundAddress()));
  client.send("GET /echo HTTP/1.1\r\n");  // never finishes the headers
  auto start = std::chrono::steady_clock::now();
  auto r = parseHttp(client.readAll());
  EXPECT_EQ(r.status, 408);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST_F(AdminServerTest, AsyncReplyFromAnotherThreadAndHalfClosedClient) {
  startTcp();
  std::mutex m;
  std::vector<std::thread> threads;
  loop_.call([&] {
    server_->addHandler("/slow", [&](const AdminRequest&, AdminServer::Reply reply) {
      std::lock_guard lock(m);
      threads.emplace_back([reply] {
        std::this_thread::sleep_for(50ms);
        reply(AdminResponse{200, "text/plain", "late\n"});
        reply(AdminResponse{500, "text/plain", "ignored\n"});
      });
    });
  });
  test::Client client;
  ASSERT_TRUE(client.connectTcp(*server_->boundAddress()));
  client.send("GET /slow HTTP/1.1\r\n\r\n");
  client.shutdownWrite();  // the response must still arrive
  auto r = parseHttp(client.readAll());
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "late\n");
  std::lock_guard lock(m);
  for (auto& t : threads) t.join();
}

TEST_F(AdminServerTest, HandlerThatNeverAnswersGets503) {
  startTcp({.request_timeout = 200ms});
  loop_.call([&] { server_->addHandler("/stuck", [](const AdminRequest&, AdminServer::Reply) {}); });
  auto r = get("GET /stuck HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status, 503);
}

TEST_F(AdminServerTest, HandlerExceptionIs500) {
  startTcp();
  loop_.call([&] {
    server_->addHandler("/throw", [](const AdminRequest&, AdminServer::Reply) { throw std::runtime_error("x"); });
  });
  EXPECT_EQ(get("GET /throw HTTP/1.1\r\n\r\n").status, 500);
}

TEST_F(AdminServerTest, UnixSocketWithMode0600) {
  auto path = dir_.path() / "admin" / "admin.sock";
  start({.socket_path = path});
  EXPECT_FALSE(server_->boundAddress().has_value());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  test::Client client;
  ASSERT_TRUE(client.connectUnix(path));
  client.send("GET /echo?k=v HTTP/1.1\r\n\r\n");
  auto r = parseHttp(client.readAll());
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "GET /echo\nk=v\n");
  loop_.destroy(server_);
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(AdminServerTest, TcpAndUnixTogether) {
  auto path = dir_.path() / "admin.sock";
  startTcp({.socket_path = path});
  EXPECT_EQ(get("GET /json HTTP/1.1\r\n\r\n").status, 200);
  test::Client client;
  ASSERT_TRUE(client.connectUnix(path));
  client.send("GET /json HTTP/1.1\r\n\r\n");
  EXPECT_EQ(parseHttp(client.readAll()).status, 200);
}

TEST(AdminServerCreateTest, Errors) {
  test::LoopThread loop;
  auto none = AdminServer::create(loop.dispatcher(), {});
  ASSERT_FALSE(none.has_value());
  EXPECT_NE(none.error().message.find("neither"), std::string::npos);

  auto first = AdminServer::create(loop.dispatcher(), {.address = common::SocketAddress::parse("127.0.0.1", 0).value()});
  ASSERT_TRUE(first.has_value());
  auto taken = AdminServer::create(loop.dispatcher(), {.address = (*first)->boundAddress()});
  ASSERT_FALSE(taken.has_value());
  EXPECT_EQ(taken.error().where, "admin.address");
  EXPECT_NE(taken.error().message.find("address already in use"), std::string::npos) << taken.error().describe();
}

TEST(AdminQueryTest, Parsing) {
  EXPECT_EQ(percentDecode("a%2Fb+c%zz%4"), "a/b c%zz%4");
  auto q = parseQuery("a=1&&b=&c&a=2&%3D=%26");
  EXPECT_EQ(q.size(), 4u);
  EXPECT_EQ(q["a"], "2");
  EXPECT_EQ(q["b"], "");
  EXPECT_EQ(q["c"], "");
  EXPECT_EQ(q["="], "&");
}

}  // namespace
}  // namespace culvert::agent
