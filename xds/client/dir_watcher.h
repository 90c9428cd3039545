#pragma once

// Watches a resource directory (uv_fs_event, inotify) and calls `on_change` once the
// directory has been quiet for `settle` after a change, so an editor's write-then-rename
// or a Kubernetes ConfigMap's "..data" symlink swap is one reload, not several.

#include <uv.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>

#include "proxy/common/error.h"
#include "proxy/event/dispatcher.h"

namespace culvert::xds::client {

class DirWatcher {
public:
  static common::Result<std::unique_ptr<DirWatcher>> create(event::Dispatcher& dispatcher,
                                                            const std::filesystem::path& dir,
                                                            std::chrono::milliseconds settle,
                                                            std::function<void()> on_change);
  ~DirWatcher();
  DirWatcher(const DirWatcher&) = delete;
  DirWatcher& operator=(const DirWatcher&) = delete;

private:
  DirWatcher(event::Dispatcher& dispatcher, std::chrono::milliseconds settle, std::function<void()> on_change);

  uv_fs_event_t* handle_;  // owned; freed in the close callback
  std::unique_ptr<event::Timer> settle_timer_;
  std::chrono::milliseconds settle_;
  std::function<void()> on_change_;
};

}  // namespace culvert::xds::client
