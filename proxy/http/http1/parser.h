#pragma once

#include <llhttp.h>

#include <string>
#include <string_view>

#include "proxy/common/error.h"
#include "proxy/http/header_map.h"

namespace culvert::http::http1 {

// Why a message was rejected. The smuggling shapes each get their own counter: they are
// what an attacker probing for a desync between culvert and the upstream sends.
enum class RejectReason {
  ContentLengthWithTransferEncoding,
  DuplicateContentLength,
  BadTransferEncoding,
  BadChunkSize,
  ChunkMissingCrlf,   // culvert's own check: llhttp 8.1 accepts any two bytes there
  InvalidHeaderChar,  // NUL, CTL or a non-token byte in a header name or value
  ObsFold,            // culvert's own check (RFC 9112 §5.2: reject in requests)
  WhitespaceBeforeColon,  // culvert's own check (RFC 9112 §5.1: must reject)
  BareLf,             // culvert's own check (a lone LF as a line end)
  HeadersTooLarge,
  Malformed,          // anything else llhttp rejects
};
inline constexpr size_t kRejectReasonCount = static_cast<size_t>(RejectReason::Malformed) + 1;
const char* toString(RejectReason reason);

// Receives what the parser decodes. Body data is only valid during the call.
class ParserCallbacks {
public:
  virtual ~ParserCallbacks() = default;
  virtual void onRequestHead(RequestHead&&) {}
  virtual void onResponseHead(ResponseHead&&) {}
  virtual void onBody(std::string_view data) = 0;
  virtual void onMessageComplete() = 0;
};

// HTTP/1.1 over llhttp in strict mode. After each complete message the parser pauses,
// so a pipelined request waits until the one before it is answered; dispatch() then
// reports how much it consumed and resume() lets the caller feed the rest.
class Parser {
public:
  enum class Mode { Request, Response };
  enum class Status { Ok, Paused, Error };

  Parser(Mode mode, ParserCallbacks& callbacks);
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  struct DispatchResult {
    Status status;
    size_t consumed;
  };
  DispatchResult dispatch(std::string_view data);
  void resume();
  // A response to HEAD carries no body whatever its headers say.
  void expectHeadResponse(bool head) { head_response_ = head; }
  // End of stream from the peer: completes a read-until-close response body.
  common::Result<void> finish();
  std::string errorReason() const { return error_; }
  RejectReason rejectReason() const { return reject_reason_; }
  size_t maxHeaderBytes = 64 * 1024;

private:
  static const llhttp_settings_t* settings();
  static int onUrl(llhttp_t* p, const char* at, size_t len);
  static int onStatus(llhttp_t* p, const char* at, size_t len);
  static int onHeaderField(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int onHeadersComplete(llhttp_t* p);
  static int onBodyData(llhttp_t* p, const char* at, size_t len);
  static int onMessageBegin(llhttp_t* p);
  static int onMessageCompleteCb(llhttp_t* p);
  static int onChunkHeader(llhttp_t* p);
  // culvert's own strictness over the raw bytes (what llhttp 8.1 lets through, DESIGN.md
  // §9). Returns false and sets the reject reason on the first violation.
  bool scanHead(std::string_view data);
  bool checkChunkEnd(std::string_view data);
  void reject(RejectReason reason, std::string message);
  bool addHeaderBytes(size_t len);
  void commitHeader();

  Mode mode_;
  ParserCallbacks& callbacks_;
  llhttp_t parser_{};
  std::string url_;
  std::string status_text_;
  std::string field_;
  std::string value_;
  bool in_value_ = false;
  HeaderMap headers_;
  size_t header_bytes_ = 0;
  bool head_response_ = false;
  std::string error_;
  RejectReason reject_reason_ = RejectReason::Malformed;

  // Head scanner state: lines of the start line and header block of the current message.
  bool scanning_head_ = true;
  bool at_line_start_ = true;
  bool in_start_line_ = true;
  bool seen_colon_ = false;
  bool line_empty_ = true;
  char prev_ = 0;
  // Chunked bodies: bytes of the current chunk still to come, then its CRLF.
  uint64_t chunk_remaining_ = 0;
  int chunk_crlf_expected_ = 0;  // 2, 1 or 0 bytes of "\r\n" still to check
  bool in_chunk_data_ = false;
  bool paused_for_chunk_ = false;
};

}  // namespace culvert::http::http1
