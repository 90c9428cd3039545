#pragma once

#include <map>
#include <memory>

#include "proxy/common/error.h"
#include "proxy/event/dispatcher.h"
#include "proxy/upstream/dns_resolver.h"

struct ares_channeldata;

namespace culvert::upstream {

// c-ares on a Dispatcher's libuv loop: c-ares's sockets are watched with uv_poll and its
// retransmission timeouts run on a uv timer re-armed from ares_timeout() after every
// step, so a query never blocks the loop. Queries leave from the calling thread's
// network namespace (culvertd's own, on the main thread).
class CaresDnsResolver : public DnsResolver {
public:
  struct Options {
    std::vector<common::SocketAddress> servers;  // empty: /etc/resolv.conf
    bool use_tcp = false;
    bool no_default_search_domain = false;
  };
  static common::Result<std::unique_ptr<CaresDnsResolver>> create(event::Dispatcher& dispatcher, const Options& options);
  ~CaresDnsResolver() override;

  std::unique_ptr<DnsQuery> resolve(const std::string& name, config::DnsResolution::LookupFamily family,
                                    Callback callback) override;

private:
  struct Poll;
  struct Lookup;
  class Handle;
  struct CallbackContext;
  explicit CaresDnsResolver(event::Dispatcher& dispatcher);
  static void onSocketState(void* data, int fd, int readable, int writable);
  void startLookup(const std::shared_ptr<Lookup>& lookup, int family);
  void onLookupDone(const std::shared_ptr<Lookup>& lookup, int status, DnsResponse partial);
  void rearmTimer();

  event::Dispatcher& dispatcher_;
  ares_channeldata* channel_ = nullptr;
  std::map<int, Poll*> polls_;  // by fd; each freed in its close callback
  std::unique_ptr<event::Timer> timer_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace culvert::upstream
