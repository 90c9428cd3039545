#pragma once

#include <string>
#include <string_view>

#include "proxy/http/header_map.h"

namespace culvert::http::http1 {

// How a message body is framed on the wire this side writes.
enum class BodyFraming { None, ContentLength, Chunked, UntilClose };

// Removes the hop-by-hop headers (RFC 9110 §7.6.1) that must not be forwarded, including
// any named in Connection.
void removeHopByHopHeaders(HeaderMap& headers);

// Framing for a forwarded message, given what the peer sent and the version of the side
// we write to: a known length stays Content-Length, an unknown one becomes chunked.
BodyFraming requestFraming(const RequestHead& head);
BodyFraming responseFraming(const ResponseHead& head, bool head_request);

std::string encodeRequestHead(const RequestHead& head, BodyFraming framing);
std::string encodeResponseHead(const ResponseHead& head, BodyFraming framing, bool close_connection);
// The same, appended to `out`: a caller with a buffer of its own allocates nothing.
void appendRequestHead(std::string& out, const RequestHead& head, BodyFraming framing);
void appendResponseHead(std::string& out, const ResponseHead& head, BodyFraming framing, bool close_connection);

// A chunk of body data as it goes on the wire with `framing`.
void appendBody(std::string& out, std::string_view data, BodyFraming framing);
// The end-of-body marker for `framing` (the last chunk for Chunked, nothing otherwise).
void appendBodyEnd(std::string& out, BodyFraming framing);

const char* reasonPhrase(int status);

}  // namespace culvert::http::http1
