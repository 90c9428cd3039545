#include <iostream>
#include <string>
#include <vector>

#include "agent/ctl/ctl.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return culvert::agent::runCtl(args, std::cout, std::cerr);
}
