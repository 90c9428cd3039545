#pragma once

#include <string_view>

#include "proxy/http/header_map.h"

namespace culvert::http::http2 {

// HTTP/2 header blocks ↔ the codec-neutral heads the router and HTTP/1 side use:
// :authority ↔ Host, pseudo-headers ↔ fields, Content-Length kept as the message's
// length, headers HTTP/2 may not carry dropped on the way in.

// A decoded request header block (pseudo-headers included). A body of unknown length
// (no content-length, not ended at the head) is marked chunked for an HTTP/1 upstream.
RequestHead toRequestHead(HeaderMap&& block, bool end_stream);
// The block for an upstream HTTP/2 request.
HeaderMap toRequestBlock(const RequestHead& head, std::string_view scheme);

ResponseHead toResponseHead(HeaderMap&& block);
// Spends `head`: its header fields move into the block.
HeaderMap toResponseBlock(ResponseHead&& head);

}  // namespace culvert::http::http2
