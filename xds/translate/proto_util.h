#pragma once

#include <google/protobuf/message.h>

#include <string>

#include "proxy/common/error.h"

namespace culvert::xds::translate {

// Rejects a message that carries fields culvert's proto subset does not define. Over the
// wire they arrive as unknown fields; protobuf keeps them, so without this check a field
// that changes semantics would be dropped silently. Recurses into set sub-messages, not
// into Any payloads (those are checked after unpacking).
common::Result<void> rejectUnknownFields(const google::protobuf::Message& message);

}  // namespace culvert::xds::translate
