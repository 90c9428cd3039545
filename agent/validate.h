#pragma once

#include <cstdio>

#include "agent/bootstrap.h"

namespace culvert::agent {

// `culvertd --validate`: the bootstrap was parsed already; this checks what it points at
// (every resource file, each resource on its own). Prints each problem with the file,
// resource and field to `err`; returns whether everything is valid.
bool validateConfiguration(const Bootstrap& bootstrap, std::FILE* out, std::FILE* err);

}  // namespace culvert::agent
