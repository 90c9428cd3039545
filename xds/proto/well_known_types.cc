// Keeps every protobuf well-known type in each binary that links culvert's protos.
//
// libprotobuf is linked from its static archive (packaging/cmake/CulvertDependencies.cmake),
// and a generated file's descriptor is registered only when the linker takes its object,
// that is, when something references it. The shared library registered them all, and
// resources may name any of them in an Any (a typed_config of google.protobuf.Empty or
// Struct, JSON or text input), so this file references each one. It is an INTERFACE
// source of culvert_xds_proto: compiled into the executable itself, where a static
// library member nobody calls would be dropped.
#include <google/protobuf/any.pb.h>
#include <google/protobuf/api.pb.h>
#include <google/protobuf/duration.pb.h>
#include <google/protobuf/empty.pb.h>
#include <google/protobuf/field_mask.pb.h>
#include <google/protobuf/source_context.pb.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/type.pb.h>
#include <google/protobuf/wrappers.pb.h>

namespace culvert::xds::proto {

[[gnu::used]] const google::protobuf::Message* const kWellKnownTypes[] = {
    &google::protobuf::Any::default_instance(),
    &google::protobuf::Api::default_instance(),
    &google::protobuf::Duration::default_instance(),
    &google::protobuf::Empty::default_instance(),
    &google::protobuf::FieldMask::default_instance(),
    &google::protobuf::SourceContext::default_instance(),
    &google::protobuf::Struct::default_instance(),
    &google::protobuf::Timestamp::default_instance(),
    &google::protobuf::Type::default_instance(),
    &google::protobuf::DoubleValue::default_instance(),  // wrappers.proto: every *Value
};

}  // namespace culvert::xds::proto
