#pragma once

#include <llhttp.h>

#include <string>
#include <string_view>

#include "proxy/common/error.h"
#include "proxy/http/header_map.h"

namespace culvert::http::http1 {

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
  size_t maxHeaderBytes = 64 * 1024;

private:
  static int onUrl(llhttp_t* p, const char* at, size_t len);
  static int onStatus(llhttp_t* p, const char* at, size_t len);
  static int onHeaderField(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int onHeadersComplete(llhttp_t* p);
  static int onBodyData(llhttp_t* p, const char* at, size_t len);
  static int onMessageBegin(llhttp_t* p);
  static int onMessageCompleteCb(llhttp_t* p);
  bool addHeaderBytes(size_t len);
  void commitHeader();

  Mode mode_;
  ParserCallbacks& callbacks_;
  llhttp_settings_t settings_{};
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
};

}  // namespace culvert::http::http1
