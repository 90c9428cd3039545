#include "xds/translate/proto_util.h"

#include <google/protobuf/any.pb.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/unknown_field_set.h>

#include <vector>

namespace culvert::xds::translate {

namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// The path is built only on the way out of a failure: the success path (every message
// of a 10k-endpoint ClusterLoadAssignment) allocates nothing.
common::Result<void> check(const Message& message) {
  const auto* reflection = message.GetReflection();
  const auto& unknown = reflection->GetUnknownFields(message);
  if (!unknown.empty()) {
    return common::fail("field number " + std::to_string(unknown.field(0).number()) + " of " +
                        message.GetDescriptor()->full_name() +
                        " is not supported by culvert (rejected rather than ignored)");
  }
  if (message.GetDescriptor() == google::protobuf::Any::descriptor()) return {};
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const auto* field : fields) {
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (field->is_repeated()) {
      int n = reflection->FieldSize(message, field);
      for (int i = 0; i < n; ++i) {
        auto r = check(reflection->GetRepeatedMessage(message, field, i));
        if (!r) return std::unexpected(common::nest(field->name() + "[" + std::to_string(i) + "]", r.error()));
      }
    } else {
      auto r = check(reflection->GetMessage(message, field));
      if (!r) return std::unexpected(common::nest(field->name(), r.error()));
    }
  }
  return {};
}

}  // namespace

common::Result<void> rejectUnknownFields(const Message& message) { return check(message); }

}  // namespace culvert::xds::translate
