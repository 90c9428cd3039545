#pragma once

// A throw-away PKI made with the openssl CLI (make_test_certs.sh) in a temp dir, once per
// test binary.

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace culvert::tls::testing {

inline const std::filesystem::path& testCertDir() {
  static const std::filesystem::path dir = [] {
    std::string templ = (std::filesystem::temp_directory_path() / "culvert-tls-XXXXXX").string();
    std::filesystem::path made = mkdtemp(templ.data());
    std::string cmd = std::string("sh ") + CULVERT_MAKE_TEST_CERTS + " " + made.string();
    if (std::system(cmd.c_str()) != 0) std::abort();
    std::atexit([] { std::filesystem::remove_all(testCertDir()); });
    return made;
  }();
  return dir;
}

inline std::string certPath(const std::string& name) { return (testCertDir() / name).string(); }

// The DER bytes of a PEM certificate file (via the openssl CLI, independent of the code under test).
inline std::string derOf(const std::string& name) {
  std::string der = certPath(name) + ".der";
  std::string cmd = "openssl x509 -in " + certPath(name) + " -outform DER -out " + der;
  if (std::system(cmd.c_str()) != 0) std::abort();
  std::ifstream in(der, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace culvert::tls::testing
