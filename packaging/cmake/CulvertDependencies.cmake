# Every third-party dependency comes from Debian 12 (packaging/setup.sh installs them).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)

# Static archives for the big libraries only culvertd maps (protobuf, yaml-cpp, RE2,
# nghttp2, c-ares, mbedTLS): the linker takes just the objects culvertd references,
# packed together, instead of each library's whole text, which fault-around maps almost
# entirely into the daemon's RSS (docs/benchmarks.md, "Base RSS"). libc, libstdc++, libuv,
# libbpf and spdlog stay shared.
set(Protobuf_USE_STATIC_LIBS ON)
find_package(Protobuf REQUIRED)

# Points a pkg-config imported target at the library's static archive.
function(_culvert_link_archive target archive)
  find_library(CULVERT_${archive}_PATH NAMES ${archive} REQUIRED)
  set_property(TARGET ${target} PROPERTY INTERFACE_LINK_LIBRARIES ${CULVERT_${archive}_PATH})
endfunction()

pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
_culvert_link_archive(PkgConfig::NGHTTP2 libnghttp2.a)
pkg_check_modules(LIBBPF REQUIRED IMPORTED_TARGET libbpf)
pkg_check_modules(RE2 REQUIRED IMPORTED_TARGET re2)
_culvert_link_archive(PkgConfig::RE2 libre2.a)
pkg_check_modules(CARES REQUIRED IMPORTED_TARGET libcares)
_culvert_link_archive(PkgConfig::CARES libcares.a)
# yaml-cpp's CMake package names only the shared library.
find_library(YAML_CPP_ARCHIVE NAMES libyaml-cpp.a REQUIRED)
add_library(culvert::yaml-cpp STATIC IMPORTED GLOBAL)
set_target_properties(culvert::yaml-cpp PROPERTIES IMPORTED_LOCATION ${YAML_CPP_ARCHIVE})
# mbedTLS: Debian 12 ships 2.28 without a pkg-config file or CMake package.
find_library(MBEDTLS_ARCHIVE NAMES libmbedtls.a REQUIRED)
find_library(MBEDX509_ARCHIVE NAMES libmbedx509.a REQUIRED)
find_library(MBEDCRYPTO_ARCHIVE NAMES libmbedcrypto.a REQUIRED)
if(CULVERT_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# llhttp: Debian's node-llhttp ships the generated C sources; build them as our own
# static library (third-party code: no culvert warning flags, SYSTEM include).
set(LLHTTP_SOURCE_DIR /usr/share/llhttp CACHE PATH "llhttp C sources")
set(LLHTTP_INCLUDE_DIR /usr/share/include/llhttp CACHE PATH "llhttp header")
add_library(llhttp STATIC ${LLHTTP_SOURCE_DIR}/api.c ${LLHTTP_SOURCE_DIR}/http.c ${LLHTTP_SOURCE_DIR}/llhttp.c)
target_include_directories(llhttp SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
set_target_properties(llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON C_STANDARD 11)

# BPF toolchain.
find_program(BPFTOOL bpftool PATHS /usr/sbin /sbin REQUIRED)
find_program(BPF_CLANG NAMES clang clang-14 clang-19 REQUIRED)
