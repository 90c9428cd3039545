// Http1Session's Upgrade (WebSocket) and CONNECT handling, kept apart from the request
// path: it decides with Envoy's rules (proxy/router/upgrade.h) and hands the connection
// to a Tunnel (proxy/server/tunnel.h).
#include <spdlog/spdlog.h>

#include "proxy/router/hash_policy.h"
#include "proxy/router/stream_duration.h"
#include "proxy/router/upgrade.h"
#include "proxy/server/http1_session.h"
#include "proxy/server/upstream_request.h"

namespace culvert::server {

namespace {

// Label values stay bounded whatever a client puts in its Upgrade header.
std::string_view typeLabel(std::string_view type) {
  return type == "websocket" || type == "connect" ? type : std::string_view("other");
}

}  // namespace

void Http1Session::startUpgrade(const std::string& type) {
  // Bytes after an upgrade request's head belong to the tunnel, or, when it is refused,
  // cannot be trusted as a next request: this connection carries no further request.
  close_after_response_ = true;
  // The tunnel's idle timeout covers the handshake and the tunnel; the request timers stop.
  endRequest();
  Exchange& ex = *exchange_;
  ex.decision = router::decideRoute(*settings_->routes, ex.request, routeRandom());
  const config::Route* route = ex.decision.route;
  const config::RouteAction* action = route && route->route ? &*route->route : nullptr;
  auto verdict = router::decideUpgrade(settings_->upgrade_configs, action, type);
  if (verdict == router::UpgradeAction::Reject) {
    services_.stats
        .counter("culvert_http_downstream_upgrades_rejected_total",
                 {{"tenant", pod_->tenant->name}, {"type", std::string(typeLabel(type))}, {"reason", "not_enabled"}},
                 "Upgrade and CONNECT requests refused: not enabled (403), or CONNECT over HTTP/2 (501)")
        .inc();
    spdlog::debug("pod {}/{}: upgrade {} not enabled", pod_->namespace_name, pod_->name, type);
    sendLocalReply(403, "");  // Envoy's answer (upgrade_failed)
    return;
  }
  if (route == nullptr) {
    sendLocalReply(404, "no route\n");
    return;
  }
  if (route->direct_response) {
    sendLocalReply(static_cast<int>(route->direct_response->status), route->direct_response->body);
    return;
  }
  if (ex.request.chunked || ex.request.content_length.value_or(0) > 0) {
    sendLocalReply(400, "an upgrade request with a body is not supported\n");
    return;
  }
  ex.action = action;
  upstream::ClusterManager::PickContext pick;
  pick.priority = action->priority;
  if (!action->hash_policy.empty()) pick.hash = router::hashRequest(action->hash_policy, ex.request.headers, pod_->ip);
  auto selection = services_.clusters.pickEndpoint(ex.decision.cluster(), pick);
  if (!selection) {
    sendLocalReply(503, selection.error() == upstream::ClusterManager::PickError::NoCluster ? "no cluster\n"
                        : selection.error() == upstream::ClusterManager::PickError::Overflow
                            ? "upstream overflow\n"
                            : "no healthy upstream\n");
    return;
  }
  ex.tunnel_pick = std::move(selection->request);
  common::SocketAddress endpoint = selection->endpoint.address;
  if (selection->original_destination) {
    if (!original_destination_) {
      sendLocalReply(503, "no original destination for an ORIGINAL_DST cluster\n");
      return;
    }
    endpoint = *original_destination_;
  }
  Tunnel::Options options;
  if (verdict == router::UpgradeAction::TerminateConnect) {
    options.mode = Tunnel::Mode::TerminateConnect;
  } else {
    if (selection->cluster->http_protocol == config::UpstreamHttpProtocol::Http2) {
      // Envoy's warning too: upgrades do not work with HTTP/2 upstreams.
      sendLocalReply(503, "upgrades to an HTTP/2 cluster are not supported\n");
      return;
    }
    options.mode = type == "connect" ? Tunnel::Mode::ForwardConnect : Tunnel::Mode::ForwardUpgrade;
    std::string upgrade(ex.request.headers.get("upgrade").value_or(""));
    prepareUpstreamRequest(ex.request, *settings_->routes, ex.decision, pod_->ip);
    if (options.mode == Tunnel::Mode::ForwardUpgrade) {
      // Hop-by-hop, but the point of this request: the upstream must see them.
      ex.request.headers.add("connection", "upgrade");
      ex.request.headers.add("upgrade", std::move(upgrade));
    }
    options.request_head = http::http1::encodeRequestHead(ex.request, http::http1::BodyFraming::None);
  }
  // The route's idle_timeout replaces the connection manager's stream_idle_timeout, as
  // for any stream; Envoy applies the same to upgraded streams.
  options.idle_timeout = action->idle_timeout.value_or(settings_->stream_timeouts.stream_idle);
  // max_stream_duration bounds the whole stream, so the tunnel's life too (Envoy's rule).
  if (action->max_stream_duration) {
    options.max_duration = router::streamDurationLimit(*action->max_stream_duration, ex.request.headers);
  }
  auto connection_unit = services_.clusters.reserveConnection(ex.decision.cluster(), action->priority);
  if (!connection_unit) {
    sendLocalReply(503, "upstream overflow\n");
    return;
  }
  if (settings_->access_logs.enabled()) {
    ex.log.route_name = ex.decision.route ? ex.decision.route->name : std::string();
    ex.log.upstream_cluster = action->cluster;
    ex.log.upstream_host = endpoint;
    ++ex.log.attempt_count;
  }
  // A tunnel's connection is never pooled: a key of its own kind (Tcp is never parked).
  upstream::ConnectRequest connect{{pod_->id, endpoint, upstream::Protocol::Tcp, action->cluster},
                                   pod_->netnsFd(),
                                   selection->cluster->connect_timeout,
                                   std::make_shared<upstream::ResourceHold>(std::move(*connection_unit))};
  ex.tunnel = std::make_unique<Tunnel>(services_.dispatcher, services_.scheduler, *pod_->tenant, *downstream_,
                                     std::move(options), tunnelHooks(type));
  ex.tunnel->start(services_.pool, connect);
}

Tunnel::Hooks Http1Session::tunnelHooks(const std::string& type) {
  Tunnel::Hooks hooks;
  // The hooks run only while the tunnel exists, which the exchange owns until close().
  hooks.shape_response = [this](http::ResponseHead& head) {
    Exchange& ex = *exchange_;
    response_started_ = true;
    countStatus(head.status);
    router::prepareDownstreamResponse(*settings_->routes, ex.decision, head.headers);
    if (settings_->access_logs.enabled()) {
      ex.log.response_code = static_cast<uint32_t>(head.status);
      ex.log.response_code_details = "via_upstream";
      ex.log.response_headers = head.headers;
    }
  };
  hooks.take_early_bytes = [this] {
    return downstream_pending_.take();
  };
  hooks.on_connect_failed = [this](const std::string& reason) {
    Exchange& ex = *exchange_;
    pod_->tenant->upstream_cx_connect_fail->inc();
    spdlog::debug("pod {}/{}: {} {}: {}", pod_->namespace_name, pod_->name, ex.request.method, ex.request.path, reason);
    sendLocalReply(503, "upstream connect error or disconnect/reset before headers\n");
  };
  hooks.on_open = [this, type] {
    // The tunnel reads and writes both connections from here on.
    share_pause_.reset();
    buffered_.set(0);
    // The request's duration histogram ends at the 101/200; its access-log line waits for
    // the tunnel's end, with the bytes it carried (as Envoy logs an upgraded stream).
    tunnel_log_pending_ = true;
    recordDuration();
    auto labels = common::Labels{{"tenant", pod_->tenant->name}};
    auto& active = services_.stats.gauge("culvert_http_downstream_upgrades_active", labels,
                                             "Upgraded HTTP/1.1 connections (WebSocket, CONNECT) open now");
    active.add(1);
    exchange_->tunnels_active = &active;
    labels.emplace_back("type", std::string(typeLabel(type)));
    services_.stats
        .counter("culvert_http_downstream_upgrades_total", labels,
                 "HTTP/1.1 connections upgraded to a tunnel (WebSocket after 101, CONNECT after 2xx)")
        .inc();
  };
  hooks.on_response_relayed = [this] {
    recordDuration();
    in_exchange_ = false;
    if (downstream_->queuedWriteBytes() == 0) close();  // else onWriteDrained closes
  };
  hooks.on_done = [this] { close(); };
  hooks.on_timeout_before_response = [this](bool idle) {
    if (idle) {
      sendLocalReply(408, "stream timeout\n");
    } else {
      sendLocalReply(504, "upstream request timeout\n");
    }
  };
  return hooks;
}

}  // namespace culvert::server
