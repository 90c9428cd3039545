#include <cstdlib>
#include <iostream>

#include "cni/plugin/plugin.h"

int main() { return culvert::cni::runPlugin(std::getenv("CNI_COMMAND"), std::cin, std::cout); }
