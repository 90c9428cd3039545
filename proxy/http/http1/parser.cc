#include "proxy/http/http1/parser.h"

#include <algorithm>
#include <cctype>

namespace culvert::http::http1 {

namespace {
Parser& self(llhttp_t* p) { return *static_cast<Parser*>(p->data); }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}
}  // namespace

Parser::Parser(Mode mode, ParserCallbacks& callbacks) : mode_(mode), callbacks_(callbacks) {
  llhttp_settings_init(&settings_);
  settings_.on_message_begin = &Parser::onMessageBegin;
  settings_.on_url = &Parser::onUrl;
  settings_.on_status = &Parser::onStatus;
  settings_.on_header_field = &Parser::onHeaderField;
  settings_.on_header_value = &Parser::onHeaderValue;
  settings_.on_headers_complete = &Parser::onHeadersComplete;
  settings_.on_body = &Parser::onBodyData;
  settings_.on_message_complete = &Parser::onMessageCompleteCb;
  llhttp_init(&parser_, mode == Mode::Request ? HTTP_REQUEST : HTTP_RESPONSE, &settings_);
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
  if (!field_.empty()) headers_.add(lower(std::move(field_)), std::move(value_));
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
  self(p).callbacks_.onBody(std::string_view(at, len));
  return 0;
}

int Parser::onMessageCompleteCb(llhttp_t* p) {
  self(p).callbacks_.onMessageComplete();
  return HPE_PAUSED;
}

Parser::DispatchResult Parser::dispatch(std::string_view data) {
  llhttp_errno_t err = llhttp_execute(&parser_, data.data(), data.size());
  if (err == HPE_OK) return {Status::Ok, data.size()};
  if (err == HPE_PAUSED) {
    size_t consumed = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data.data());
    return {Status::Paused, consumed};
  }
  if (err == HPE_CB_URL_COMPLETE || err == HPE_USER || header_bytes_ > maxHeaderBytes) {
    error_ = "headers exceed " + std::to_string(maxHeaderBytes) + " bytes";
  } else {
    error_ = std::string(llhttp_errno_name(err)) + ": " + (llhttp_get_error_reason(&parser_) ? llhttp_get_error_reason(&parser_) : "");
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
