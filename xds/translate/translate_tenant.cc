// culvert.v1.Tenant -> config::Tenant. Kept apart from translate.cc: it is culvert's own
// type, not Envoy's.

#include <set>

#include "xds/proto/culvert/v1/tenant.pb.h"
#include "xds/translate/proto_util.h"
#include "xds/translate/translate.h"

namespace culvert::xds::translate {

namespace {

// Names a Tenant's scope lists carry: non-empty, no duplicates.
common::Result<std::vector<std::string>> translateNames(const google::protobuf::RepeatedPtrField<std::string>& names,
                                                        const std::string& field) {
  std::set<std::string> seen;
  std::vector<std::string> out;
  for (int i = 0; i < names.size(); ++i) {
    const std::string where = field + "[" + std::to_string(i) + "]";
    if (names[i].empty()) return common::fail("a name must not be empty", where);
    if (!seen.insert(names[i]).second) return common::fail("duplicate name '" + names[i] + "'", where);
    out.push_back(names[i]);
  }
  return out;
}

}  // namespace

common::Result<config::Tenant> translateTenant(const culvert::v1::Tenant& proto) {
  if (auto ok = rejectUnknownFields(proto); !ok) return std::unexpected(ok.error());
  config::Tenant out;
  out.name = proto.name();
  if (out.name.empty()) return common::fail("a tenant needs a name", "name");
  if (out.name.size() > 253) return common::fail("a tenant name is at most 253 characters", "name");
  const auto& l = proto.limits();
  if (l.has_max_downstream_connections()) out.limits.max_downstream_connections = l.max_downstream_connections().value();
  if (l.has_max_requests_in_flight()) out.limits.max_requests_in_flight = l.max_requests_in_flight().value();
  if (l.has_max_buffered_bytes()) out.limits.max_buffered_bytes = l.max_buffered_bytes().value();
  if (l.has_max_requests_per_second()) out.limits.max_requests_per_second = l.max_requests_per_second().value();
  if (l.has_burst()) {
    if (!l.has_max_requests_per_second() || l.max_requests_per_second().value() == 0) {
      return common::fail("burst needs a non-zero max_requests_per_second", "limits.burst");
    }
    out.limits.burst = l.burst().value();
  }
  if (proto.has_weight()) {
    if (proto.weight().value() == 0 || proto.weight().value() > 1000) {
      return common::fail("weight must be 1..1000", "weight");
    }
    out.weight = proto.weight().value();
  }
  switch (proto.fail_mode()) {
    case culvert::v1::Tenant::FAIL_MODE_UNSPECIFIED:
      break;
    case culvert::v1::Tenant::OPEN:
      out.fail_mode = config::TenantFailMode::Open;
      break;
    case culvert::v1::Tenant::CLOSED:
      out.fail_mode = config::TenantFailMode::Closed;
      break;
    default:
      return common::fail("unknown fail_mode " + std::to_string(proto.fail_mode()) + " (OPEN or CLOSED)", "fail_mode");
  }
  auto listeners = translateNames(proto.allowed_listeners(), "allowed_listeners");
  if (!listeners) return std::unexpected(listeners.error());
  out.allowed_listeners = std::move(*listeners);
  auto routes = translateNames(proto.allowed_routes(), "allowed_routes");
  if (!routes) return std::unexpected(routes.error());
  out.allowed_routes = std::move(*routes);
  return out;
}

}  // namespace culvert::xds::translate
