#include "xds/translate/proto_util.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/unknown_field_set.h>

#include <vector>

namespace culvert::xds::translate {

namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

std::string join(const std::string& path, const std::string& field) {
  return path.empty() ? field : path + "." + field;
}

common::Result<void> check(const Message& message, const std::string& path) {
  const auto* reflection = message.GetReflection();
  const auto& unknown = reflection->GetUnknownFields(message);
  if (!unknown.empty()) {
    return common::fail("field number " + std::to_string(unknown.field(0).number()) + " of " +
                            message.GetDescriptor()->full_name() +
                            " is not supported by culvert (rejected rather than ignored)",
                        path);
  }
  if (message.GetDescriptor()->full_name() == "google.protobuf.Any") return {};
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const auto* field : fields) {
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (field->is_repeated()) {
      int n = reflection->FieldSize(message, field);
      for (int i = 0; i < n; ++i) {
        auto r = check(reflection->GetRepeatedMessage(message, field, i),
                       join(path, field->name() + "[" + std::to_string(i) + "]"));
        if (!r) return r;
      }
    } else {
      auto r = check(reflection->GetMessage(message, field), join(path, field->name()));
      if (!r) return r;
    }
  }
  return {};
}

}  // namespace

common::Result<void> rejectUnknownFields(const Message& message) { return check(message, ""); }

}  // namespace culvert::xds::translate
