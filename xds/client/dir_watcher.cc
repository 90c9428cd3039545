#include "xds/client/dir_watcher.h"

namespace culvert::xds::client {

DirWatcher::DirWatcher(event::Dispatcher& dispatcher, std::chrono::milliseconds settle,
                       std::function<void()> on_change)
    : handle_(new uv_fs_event_t{}), settle_(settle), on_change_(std::move(on_change)) {
  uv_fs_event_init(dispatcher.loop(), handle_);
  handle_->data = this;
  settle_timer_ = dispatcher.createTimer([this] { on_change_(); });
}

common::Result<std::unique_ptr<DirWatcher>> DirWatcher::create(event::Dispatcher& dispatcher,
                                                               const std::filesystem::path& dir,
                                                               std::chrono::milliseconds settle,
                                                               std::function<void()> on_change) {
  std::unique_ptr<DirWatcher> w(new DirWatcher(dispatcher, settle, std::move(on_change)));
  int rc = uv_fs_event_start(
      w->handle_,
      [](uv_fs_event_t* h, const char*, int, int) {
        auto* self = static_cast<DirWatcher*>(h->data);
        if (self != nullptr) self->settle_timer_->enable(self->settle_);
      },
      dir.c_str(), 0);
  if (rc != 0) return common::fail(std::string("cannot watch the directory: ") + uv_strerror(rc), dir.string());
  return w;
}

DirWatcher::~DirWatcher() {
  settle_timer_.reset();
  handle_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
}

}  // namespace culvert::xds::client
