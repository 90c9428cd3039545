#pragma once

#include <chrono>
#include <filesystem>

#include "cni/protocol/enrollment.h"

namespace culvert::cni {

// Sends one request to culvertd's enrollment socket and waits for the one-line reply.
// Blocking, poll-based and bounded: connect, send and receive together never take longer
// than `timeout`. A reply of {"ok":false} is a successful call (check response.ok);
// the Error is for transport and framing failures, with Error::where = the socket path.
common::Result<EnrollmentResponse> callEnrollment(const std::filesystem::path& socket,
                                                  const EnrollmentRequest& request,
                                                  std::chrono::milliseconds timeout);

}  // namespace culvert::cni
