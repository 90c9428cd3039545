#pragma once

#include <atomic>

#include "proxy/event/scheduler.h"
#include "proxy/network/connection.h"
#include "proxy/tenant/tenant_context.h"

namespace culvert::server {

// A tenant's share of the worker, as the owner of a connection names it
// (ConnectionCallbacks::writeShare and readShare, ConnectRequest::share): the tenant's
// weight as it is now, and the counter of its pauses.
inline network::WorkShare tenantShare(event::Scheduler& scheduler, const tenant::TenantContext& tenant) {
  return {&scheduler, tenant.id, tenant.weight.load(std::memory_order_relaxed), tenant.share_paused};
}

}  // namespace culvert::server
