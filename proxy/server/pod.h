#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proxy/common/socket_address.h"
#include "proxy/network/socket.h"
#include "proxy/tenant/tenant_context.h"

namespace culvert::server {

// An enrolled pod as the data path sees it. Immutable and shared by the workers; the
// netns handle closes when the last worker lets go of the pod.
struct Pod {
  uint64_t id = 0;  // the pod's netns cookie: unique while the netns lives
  std::string namespace_name;
  std::string name;
  // The pod's enrolled address: what x-forwarded-for, hashing and logs use, never the
  // loopback address the capture redirect makes the connection come from.
  std::string ip;
  std::shared_ptr<network::FileDescriptor> netns;
  std::shared_ptr<tenant::TenantContext> tenant;

  int netnsFd() const { return netns ? netns->get() : -1; }
};

}  // namespace culvert::server
