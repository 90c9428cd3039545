#include "xds/client/last_good_writer.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace culvert::xds::client {

common::Result<void> writeFileAtomically(const std::filesystem::path& file, const std::string& bytes) {
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  auto tmp = file;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return common::fail(std::string("cannot create: ") + std::strerror(errno), tmp.string());
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return common::fail(std::string("cannot write: ") + std::strerror(err), tmp.string());
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return common::fail(std::string("cannot sync: ") + std::strerror(errno), tmp.string());
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return common::fail(std::string("cannot rename into place: ") + std::strerror(errno), file.string());
  }
  return {};
}

LastGoodWriter::LastGoodWriter(std::filesystem::path file, common::Counter& failures)
    : file_(std::move(file)), failures_(failures), thread_([this] { run(); }) {}

LastGoodWriter::~LastGoodWriter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void LastGoodWriter::write(std::string bytes) {
  {
    std::lock_guard lock(mu_);
    waiting_ = std::move(bytes);
  }
  wake_.notify_one();
}

void LastGoodWriter::flush() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [this] { return !waiting_ && !writing_; });
}

void LastGoodWriter::run() {
  pthread_setname_np(pthread_self(), "xds-store");  // as `ps -L` and perf show it
  std::unique_lock lock(mu_);
  while (true) {
    wake_.wait(lock, [this] { return waiting_ || stopping_; });
    if (!waiting_) return;  // stopping, nothing left to write
    std::string bytes = std::move(*waiting_);
    waiting_.reset();
    writing_ = true;
    lock.unlock();
    auto ok = writeFileAtomically(file_, bytes);
    if (!ok) {
      failures_.inc();
      spdlog::error("xds: cannot store the accepted configuration: {}", ok.error().describe());
    }
    lock.lock();
    writing_ = false;
    idle_.notify_all();
  }
}

}  // namespace culvert::xds::client
