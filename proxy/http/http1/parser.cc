#include "proxy/http/http1/parser.h"

#include <algorithm>
#include <cstring>

#include "proxy/common/ascii.h"

namespace culvert::http::http1 {

namespace {
Parser& self(llhttp_t* p) { return *static_cast<Parser*>(p->data); }
constexpr size_t kTypicalHeaderCount = 8;
}  // namespace

const char* toString(RejectReason reason) {
  switch (reason) {
    case RejectReason::ContentLengthWithTransferEncoding: return "content_length_with_transfer_encoding";
    case RejectReason::DuplicateContentLength: return "duplicate_content_length";
    case RejectReason::BadTransferEncoding: return "bad_transfer_encoding";
    case RejectReason::BadChunkSize: return "bad_chunk_size";
    case RejectReason::ChunkMissingCrlf: return "chunk_missing_crlf";
    case RejectReason::InvalidHeaderChar: return "invalid_header_char";
    case RejectReason::ObsFold: return "obs_fold";
    case RejectReason::WhitespaceBeforeColon: return "whitespace_before_colon";
    case RejectReason::BareLf: return "bare_lf";
    case RejectReason::HeadersTooLarge: return "headers_too_large";
    case RejectReason::Malformed: return "malformed";
  }
  return "malformed";
}

// The callbacks are the same for every parser: one shared table, not 184 bytes in each
// (an idle keep-alive connection keeps its parser).
const llhttp_settings_t* Parser::settings() {
  static const llhttp_settings_t table = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = &Parser::onMessageBegin;
    s.on_url = &Parser::onUrl;
    s.on_status = &Parser::onStatus;
    s.on_header_field = &Parser::onHeaderField;
    s.on_header_value = &Parser::onHeaderValue;
    s.on_headers_complete = &Parser::onHeadersComplete;
    s.on_body = &Parser::onBodyData;
    s.on_message_complete = &Parser::onMessageCompleteCb;
    s.on_chunk_header = &Parser::onChunkHeader;
    return s;
  }();
  return &table;
}

Parser::Parser(Mode mode, ParserCallbacks& callbacks) : mode_(mode), callbacks_(callbacks) {
  llhttp_init(&parser_, mode == Mode::Request ? HTTP_REQUEST : HTTP_RESPONSE, settings());
  parser_.data = this;
}

bool Parser::addHeaderBytes(size_t len) {
  header_bytes_ += len;
  return header_bytes_ <= maxHeaderBytes;
}

int Parser::onMessageBegin(llhttp_t* p) {
  auto& s = self(p);
  s.url_.clear();
  s.status_text_.clear();
  s.field_.clear();
  s.value_.clear();
  s.in_value_ = false;
  s.headers_ = HeaderMap();
  s.header_bytes_ = 0;
  return 0;
}

int Parser::onUrl(llhttp_t* p, const char* at, size_t len) {
  auto& s = self(p);
  if (!s.addHeaderBytes(len)) return -1;
  s.url_.append(at, len);
  return 0;
}

int Parser::onStatus(llhttp_t* p, const char* at, size_t len) {
  auto& s = self(p);
  if (!s.addHeaderBytes(len)) return -1;
  s.status_text_.append(at, len);
  return 0;
}

void Parser::commitHeader() {
  if (!field_.empty()) {
    common::lowerAsciiInPlace(field_);
    if (headers_.size() == 0) {
      // Room for a typical head at once, where growing 1, 2, 4, 8 allocated four times
      // (and a request's also for the fields the router adds).
      headers_.reserve(mode_ == Mode::Request ? kTypicalHeaderCount + kRouterAddedHeaders : kTypicalHeaderCount);
    }
    headers_.add(std::move(field_), std::move(value_));
  }
  field_.clear();
  value_.clear();
  in_value_ = false;
}

int Parser::onHeaderField(llhttp_t* p, const char* at, size_t len) {
  auto& s = self(p);
  if (!s.addHeaderBytes(len)) return -1;
  if (s.in_value_) s.commitHeader();
  s.field_.append(at, len);
  return 0;
}

int Parser::onHeaderValue(llhttp_t* p, const char* at, size_t len) {
  auto& s = self(p);
  if (!s.addHeaderBytes(len)) return -1;
  s.in_value_ = true;
  s.value_.append(at, len);
  return 0;
}

int Parser::onHeadersComplete(llhttp_t* p) {
  auto& s = self(p);
  s.commitHeader();
  bool chunked = (p->flags & F_CHUNKED) != 0;
  std::optional<uint64_t> content_length;
  if (p->flags & F_CONTENT_LENGTH) content_length = p->content_length;
  bool keep_alive = llhttp_should_keep_alive(p) != 0;
  if (s.mode_ == Mode::Request) {
    RequestHead head;
    head.method = llhttp_method_name(static_cast<llhttp_method_t>(p->method));
    head.path = std::move(s.url_);
    head.headers = std::move(s.headers_);
    head.version_minor = p->http_minor;
    head.keep_alive = keep_alive;
    head.chunked = chunked;
    head.content_length = content_length;
    s.callbacks_.onRequestHead(std::move(head));
    return 0;
  }
  ResponseHead head;
  head.status = p->status_code;
  head.reason = std::move(s.status_text_);
  head.headers = std::move(s.headers_);
  head.version_minor = p->http_minor;
  head.keep_alive = keep_alive;
  head.chunked = chunked;
  head.content_length = content_length;
  s.callbacks_.onResponseHead(std::move(head));
  // 1: this response has no body (a reply to HEAD).
  return s.head_response_ ? 1 : 0;
}

int Parser::onBodyData(llhttp_t* p, const char* at, size_t len) {
  auto& s = self(p);
  if (s.in_chunk_data_) {
    s.chunk_remaining_ -= std::min<uint64_t>(len, s.chunk_remaining_);
    if (s.chunk_remaining_ == 0) {
      s.in_chunk_data_ = false;
      s.chunk_crlf_expected_ = 2;
    }
  }
  s.callbacks_.onBody(std::string_view(at, len));
  return 0;
}

int Parser::onChunkHeader(llhttp_t* p) {
  auto& s = self(p);
  s.chunk_remaining_ = p->content_length;
  s.in_chunk_data_ = p->content_length > 0;
  if (!s.in_chunk_data_) return 0;
  // Stop so dispatch() can hand llhttp exactly this chunk's data.
  s.paused_for_chunk_ = true;
  return HPE_PAUSED;
}

int Parser::onMessageCompleteCb(llhttp_t* p) {
  auto& s = self(p);
  // The next message starts with a head to scan.
  s.scanning_head_ = true;
  s.at_line_start_ = true;
  s.in_start_line_ = true;
  s.seen_colon_ = false;
  s.line_empty_ = true;
  s.prev_ = 0;
  s.in_chunk_data_ = false;
  s.chunk_crlf_expected_ = 0;
  s.callbacks_.onMessageComplete();
  return HPE_PAUSED;
}

void Parser::reject(RejectReason reason, std::string message) {
  reject_reason_ = reason;
  error_ = std::move(message);
}

namespace {

// The bytes scanHead must look at one by one inside a header name.
constexpr bool isNameStop(char c) { return c == ':' || c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

}  // namespace

bool Parser::scanHead(std::string_view data) {
  const char* p = data.data();
  const char* const end = p + data.size();
  while (p < end && scanning_head_) {
    // A run of bytes that need no look one by one: advanced over at once.
    const char* run_end = p;
    if (in_start_line_ || seen_colon_) {
      // The rest of the start line or of a header value: nothing in it is checked but
      // its line end, so jump there (a 32 KiB header costs a memchr, not a loop).
      const auto* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      run_end = nl != nullptr ? nl : end;
    } else {
      // A header name: only its colon, whitespace and line ends are looked at one by one.
      while (run_end < end && !isNameStop(*run_end)) ++run_end;
      if (at_line_start_ && run_end > p && run_end < end && *run_end == ':') {
        // The common case, a whole "name: value\r\n" line in this read, in one go: the
        // state at a line's start is the same after it, so nothing needs saving. Anything
        // else (a line cut by the end of the read, a bad byte) goes byte by byte below.
        const auto* nl = static_cast<const char*>(std::memchr(run_end, '\n', static_cast<size_t>(end - run_end)));
        if (nl != nullptr && nl[-1] == '\r') {
          p = nl + 1;
          continue;
        }
      }
    }
    if (run_end > p) {
      prev_ = run_end[-1];
      at_line_start_ = false;
      line_empty_ = false;
      p = run_end;
      continue;
    }
    char c = *p++;
    if (c == '\n') {
      if (prev_ != '\r') {
        reject(RejectReason::BareLf, "line ends in a bare LF");
        return false;
      }
      if (line_empty_ && !in_start_line_) {
        scanning_head_ = false;  // the empty line: the head is complete
      }
      in_start_line_ = false;
      at_line_start_ = true;
      seen_colon_ = false;
      line_empty_ = true;
    } else if (c != '\r') {
      if (at_line_start_ && !in_start_line_ && (c == ' ' || c == '\t')) {
        reject(RejectReason::ObsFold, "obsolete line folding in a header");
        return false;
      }
      if (!in_start_line_ && !seen_colon_) {
        if (c == ':') {
          seen_colon_ = true;
        } else if (c == ' ' || c == '\t') {
          reject(RejectReason::WhitespaceBeforeColon, "whitespace between a header name and the colon");
          return false;
        }
      }
      at_line_start_ = false;
      line_empty_ = false;
    }
    prev_ = c;
  }
  return true;
}

// After a chunk's data llhttp skips two bytes without looking at them; they must be CRLF.
bool Parser::checkChunkEnd(std::string_view data) {
  size_t i = 0;
  while (chunk_crlf_expected_ > 0 && i < data.size()) {
    char want = chunk_crlf_expected_ == 2 ? '\r' : '\n';
    if (data[i] != want) {
      reject(RejectReason::ChunkMissingCrlf, "chunk data not followed by CRLF");
      return false;
    }
    --chunk_crlf_expected_;
    ++i;
  }
  return true;
}

Parser::DispatchResult Parser::dispatch(std::string_view data) {
  if (!scanHead(data)) return {Status::Error, 0};
  // llhttp runs over the data in pieces: each chunk's data is handed over exactly, so the
  // two bytes after it (which llhttp skips unseen) are checked first.
  size_t offset = 0;
  llhttp_errno_t err = HPE_OK;
  while (offset < data.size()) {
    if (!checkChunkEnd(data.substr(offset))) return {Status::Error, 0};
    size_t end = in_chunk_data_ ? offset + std::min<uint64_t>(chunk_remaining_, data.size() - offset) : data.size();
    err = llhttp_execute(&parser_, data.data() + offset, end - offset);
    if (err == HPE_PAUSED) {
      size_t pos = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data.data());
      if (!paused_for_chunk_) return {Status::Paused, pos};
      paused_for_chunk_ = false;
      llhttp_resume(&parser_);
      err = HPE_OK;
      offset = pos;
      continue;
    }
    if (err == HPE_PAUSED_UPGRADE) {
      // After a CONNECT or Upgrade message llhttp stops by itself: the rest is not HTTP.
      return {Status::Paused, static_cast<size_t>(llhttp_get_error_pos(&parser_) - data.data())};
    }
    if (err != HPE_OK) break;
    offset = end;
  }
  if (err == HPE_OK) return {Status::Ok, data.size()};
  std::string reason = llhttp_get_error_reason(&parser_) ? llhttp_get_error_reason(&parser_) : "";
  if (header_bytes_ > maxHeaderBytes) {
    reject(RejectReason::HeadersTooLarge, "headers exceed " + std::to_string(maxHeaderBytes) + " bytes");
  } else if (err == HPE_UNEXPECTED_CONTENT_LENGTH) {
    reject(reason.starts_with("Duplicate") ? RejectReason::DuplicateContentLength
                                           : RejectReason::ContentLengthWithTransferEncoding,
           reason);
  } else if (err == HPE_INVALID_TRANSFER_ENCODING) {
    reject(RejectReason::BadTransferEncoding, reason);
  } else if (err == HPE_INVALID_CHUNK_SIZE) {
    reject(RejectReason::BadChunkSize, reason);
  } else if (err == HPE_INVALID_HEADER_TOKEN) {
    reject(RejectReason::InvalidHeaderChar, reason);
  } else {
    reject(RejectReason::Malformed, std::string(llhttp_errno_name(err)) + ": " + reason);
  }
  return {Status::Error, 0};
}

void Parser::resume() { llhttp_resume(&parser_); }

common::Result<void> Parser::finish() {
  llhttp_errno_t err = llhttp_finish(&parser_);
  if (err == HPE_OK || err == HPE_PAUSED) return {};
  return common::fail(std::string("incomplete message: ") + llhttp_errno_name(err));
}

}  // namespace culvert::http::http1
