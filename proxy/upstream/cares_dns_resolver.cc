#include "proxy/upstream/cares_dns_resolver.h"

#include <ares.h>
#include <uv.h>

#include <algorithm>
#include <mutex>
#include <string>

namespace culvert::upstream {

using LookupFamily = config::DnsResolution::LookupFamily;

// One watched c-ares socket.
struct CaresDnsResolver::Poll {
  uv_poll_t handle{};
  CaresDnsResolver* owner = nullptr;
  int fd = -1;
};

struct CaresDnsResolver::Lookup {
  std::string name;
  LookupFamily family = LookupFamily::Auto;
  Callback callback;  // cleared when cancelled
  bool fell_back = false;
};

// The caller's handle: dropping it clears the callback, so an answer that still
// arrives is discarded.
class CaresDnsResolver::Handle : public DnsQuery {
public:
  explicit Handle(std::weak_ptr<Lookup> lookup) : lookup_(std::move(lookup)) {}
  ~Handle() override {
    if (auto lookup = lookup_.lock()) lookup->callback = nullptr;
  }

private:
  std::weak_ptr<Lookup> lookup_;
};

// What ares_getaddrinfo's callback needs: the resolver (if still alive) and the lookup.
struct CaresDnsResolver::CallbackContext {
  CaresDnsResolver* resolver;
  std::weak_ptr<bool> alive;
  std::shared_ptr<Lookup> lookup;
};

namespace {

int toAresFamily(LookupFamily family, bool fell_back) {
  switch (family) {
    case LookupFamily::V4Only: return AF_INET;
    case LookupFamily::V6Only: return AF_INET6;
    case LookupFamily::All: return AF_UNSPEC;
    case LookupFamily::Auto: return fell_back ? AF_INET : AF_INET6;
    case LookupFamily::V4Preferred: return fell_back ? AF_INET6 : AF_INET;
  }
  return AF_UNSPEC;
}

void initLibraryOnce() {
  static std::once_flag once;
  std::call_once(once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
}

}  // namespace

CaresDnsResolver::CaresDnsResolver(event::Dispatcher& dispatcher) : dispatcher_(dispatcher) {}

common::Result<std::unique_ptr<CaresDnsResolver>> CaresDnsResolver::create(event::Dispatcher& dispatcher,
                                                                          const Options& options) {
  initLibraryOnce();
  std::unique_ptr<CaresDnsResolver> self(new CaresDnsResolver(dispatcher));
  ares_options opts{};
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_FLAGS;
  opts.sock_state_cb = &CaresDnsResolver::onSocketState;
  opts.sock_state_cb_data = self.get();
  opts.flags = (options.use_tcp ? ARES_FLAG_USEVC : 0) | (options.no_default_search_domain ? ARES_FLAG_NOSEARCH : 0);
  ares_channel channel = nullptr;
  if (int rc = ares_init_options(&channel, &opts, mask); rc != ARES_SUCCESS) {
    return common::fail(std::string("c-ares init: ") + ares_strerror(rc));
  }
  self->channel_ = channel;
  if (!options.servers.empty()) {
    std::vector<ares_addr_port_node> nodes(options.servers.size());
    for (size_t i = 0; i < options.servers.size(); ++i) {
      const auto& server = options.servers[i];
      auto& node = nodes[i];
      node.next = i + 1 < nodes.size() ? &nodes[i + 1] : nullptr;
      node.family = server.family();
      node.udp_port = server.port();
      node.tcp_port = server.port();
      if (server.isV4()) {
        node.addr.addr4 = reinterpret_cast<const sockaddr_in*>(server.sockaddr_ptr())->sin_addr;
      } else {
        node.addr.addr6 = *reinterpret_cast<const ares_in6_addr*>(
            &reinterpret_cast<const sockaddr_in6*>(server.sockaddr_ptr())->sin6_addr);
      }
    }
    if (int rc = ares_set_servers_ports(channel, nodes.data()); rc != ARES_SUCCESS) {
      return common::fail(std::string("c-ares servers: ") + ares_strerror(rc));
    }
  }
  self->timer_ = dispatcher.createTimer([raw = self.get()] {
    // Retransmissions and timeouts of every query.
    std::weak_ptr<bool> alive = raw->alive_;
    ares_process_fd(raw->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    if (auto a = alive.lock(); a && *a) raw->rearmTimer();
  });
  return self;
}

CaresDnsResolver::~CaresDnsResolver() {
  *alive_ = false;
  // Pending callbacks run now with ARES_EDESTRUCTION and see alive == false.
  if (channel_) ares_destroy(channel_);
  for (auto& [fd, poll] : polls_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&poll->handle),
             [](uv_handle_t* h) { delete static_cast<Poll*>(h->data); });
  }
}

void CaresDnsResolver::onSocketState(void* data, int fd, int readable, int writable) {
  auto* self = static_cast<CaresDnsResolver*>(data);
  auto it = self->polls_.find(fd);
  if (!readable && !writable) {
    // c-ares closes the socket right after this: stop watching it first.
    if (it == self->polls_.end()) return;
    uv_close(reinterpret_cast<uv_handle_t*>(&it->second->handle),
             [](uv_handle_t* h) { delete static_cast<Poll*>(h->data); });
    self->polls_.erase(it);
    return;
  }
  Poll* poll;
  if (it == self->polls_.end()) {
    poll = new Poll;
    poll->owner = self;
    poll->fd = fd;
    poll->handle.data = poll;
    if (uv_poll_init_socket(self->dispatcher_.loop(), &poll->handle, fd) != 0) {
      delete poll;
      return;  // the query times out through ares_timeout
    }
    self->polls_.emplace(fd, poll);
  } else {
    poll = it->second;
  }
  int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
  uv_poll_start(&poll->handle, events, [](uv_poll_t* handle, int status, int ev) {
    auto* p = static_cast<Poll*>(handle->data);
    auto* resolver = p->owner;
    std::weak_ptr<bool> alive = resolver->alive_;
    // An error on the socket: let c-ares read it and see the failure.
    ares_socket_t read_fd = (status < 0 || (ev & UV_READABLE)) ? p->fd : ARES_SOCKET_BAD;
    ares_socket_t write_fd = (status == 0 && (ev & UV_WRITABLE)) ? p->fd : ARES_SOCKET_BAD;
    ares_process_fd(resolver->channel_, read_fd, write_fd);  // may uv_close `p` (freed later)
    if (auto a = alive.lock(); a && *a) resolver->rearmTimer();
  });
}

void CaresDnsResolver::rearmTimer() {
  timeval tv{};
  if (ares_timeout(channel_, nullptr, &tv) == nullptr) {
    timer_->disable();
    return;
  }
  auto ms = std::chrono::milliseconds(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000);
  timer_->enable(std::max(ms, std::chrono::milliseconds(1)));
}

std::unique_ptr<DnsQuery> CaresDnsResolver::resolve(const std::string& name, LookupFamily family, Callback callback) {
  auto lookup = std::make_shared<Lookup>();
  lookup->name = name;
  lookup->family = family;
  lookup->callback = std::move(callback);
  auto handle = std::make_unique<Handle>(lookup);
  startLookup(lookup, toAresFamily(family, false));
  return handle;
}

void CaresDnsResolver::startLookup(const std::shared_ptr<Lookup>& lookup, int family) {
  ares_addrinfo_hints hints{};
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  // Keep the server's order: LOGICAL_DNS takes the first address. (Sorting would also
  // connect() a UDP socket to every answer.)
  hints.ai_flags = ARES_AI_NOSORT;
  auto* context = new CallbackContext{this, alive_, lookup};
  ares_getaddrinfo(
      channel_, lookup->name.c_str(), nullptr, &hints,
      [](void* arg, int status, int /*timeouts*/, ares_addrinfo* result) {
        std::unique_ptr<CallbackContext> context(static_cast<CallbackContext*>(arg));
        DnsResponse response;
        if (result) {
          for (auto* node = result->nodes; node; node = node->ai_next) {
            if (node->ai_family != AF_INET && node->ai_family != AF_INET6) continue;
            auto address = common::SocketAddress::fromSockaddr(node->ai_addr);
            auto parsed = common::SocketAddress::parse(address.ip(), 0);
            if (!parsed) continue;
            response.records.push_back({*parsed, std::chrono::seconds(std::max(node->ai_ttl, 0))});
          }
          ares_freeaddrinfo(result);
        }
        auto alive = context->alive.lock();
        if (!alive || !*alive || status == ARES_EDESTRUCTION) return;
        context->resolver->onLookupDone(context->lookup, status, std::move(response));
      },
      context);
  rearmTimer();
}

void CaresDnsResolver::onLookupDone(const std::shared_ptr<Lookup>& lookup, int status, DnsResponse response) {
  if (!lookup->callback) return;  // cancelled
  // NXDOMAIN / NODATA: an answer with no address, not a failure.
  const bool no_address = status == ARES_ENODATA || status == ARES_ENOTFOUND ||
                          (status == ARES_SUCCESS && response.records.empty());
  const bool has_fallback = lookup->family == LookupFamily::Auto || lookup->family == LookupFamily::V4Preferred;
  if (has_fallback && !lookup->fell_back && (no_address || status != ARES_SUCCESS)) {
    lookup->fell_back = true;
    startLookup(lookup, toAresFamily(lookup->family, true));
    return;
  }
  if (status == ARES_SUCCESS || no_address) {
    response.ok = true;
  } else {
    response.ok = false;
    response.error = ares_strerror(status);
    response.records.clear();
  }
  auto callback = std::move(lookup->callback);
  lookup->callback = nullptr;
  callback(std::move(response));
}

}  // namespace culvert::upstream
