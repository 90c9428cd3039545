#pragma once

#include <cstdint>

namespace culvert::network::testing {

// Data segments the kernel has sent on TCP socket `fd` (TCP_INFO's tcpi_data_segs_out),
// or 0 on failure. In a file of its own: glibc's <netinet/tcp.h>, which libuv includes,
// has an older struct tcp_info without the field, and <linux/tcp.h> conflicts with it.
uint32_t dataSegmentsSent(int fd);

}  // namespace culvert::network::testing
