// culvert-cni: the chained CNI plugin the container runtime execs (cni/plugin/plugin.h).
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>

#include "cni/plugin/plugin.h"
#include "cni/protocol/client.h"

int main() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
  };
  culvert::cni::Invocation inv;
  inv.has_command = std::getenv("CNI_COMMAND") != nullptr;
  inv.command = env("CNI_COMMAND");
  inv.container_id = env("CNI_CONTAINERID");
  inv.netns = env("CNI_NETNS");
  inv.ifname = env("CNI_IFNAME");
  inv.args = env("CNI_ARGS");
  inv.path = env("CNI_PATH");
  std::string in;
  // VERSION needs nothing from stdin, so it does not read it (it may be a terminal).
  if (inv.command != "VERSION") in.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  return culvert::cni::runPlugin(inv, in, std::cout, std::cerr, culvert::cni::callEnrollment);
}
