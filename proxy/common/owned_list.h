#pragma once

#include <cstddef>
#include <memory>

namespace culvert::common {

// Makes a class an element of an OwnedList: two pointers in the element.
class ListHook {
public:
  ListHook(const ListHook&) = delete;
  ListHook& operator=(const ListHook&) = delete;

protected:
  ListHook() = default;
  ~ListHook() = default;

private:
  template <class T>
  friend class OwnedList;
  ListHook* prev_ = nullptr;  // null: in no list
  ListHook* next_ = nullptr;
};

// A list that owns its elements and links them through the ListHook in each, so
// membership costs no allocation and removal by pointer is O(1): a worker's open
// sessions, one per connection, where a hash map spent a 32-byte node and a bucket each.
template <class T>
class OwnedList {
public:
  OwnedList() { head_.prev_ = head_.next_ = &head_; }
  ~OwnedList() { clear(); }
  OwnedList(const OwnedList&) = delete;
  OwnedList& operator=(const OwnedList&) = delete;

  T* add(std::unique_ptr<T> element) {
    ListHook* hook = element.release();
    hook->prev_ = &head_;
    hook->next_ = head_.next_;
    head_.next_->prev_ = hook;
    head_.next_ = hook;
    ++size_;
    return static_cast<T*>(hook);
  }

  // Unlinks `element` and hands it back; null when it is in no list (removed already).
  std::unique_ptr<T> remove(T* element) {
    ListHook* hook = element;
    if (hook->prev_ == nullptr) return nullptr;
    hook->prev_->next_ = hook->next_;
    hook->next_->prev_ = hook->prev_;
    hook->prev_ = hook->next_ = nullptr;
    --size_;
    return std::unique_ptr<T>(element);
  }

  // Destroys every element, the last added first.
  void clear() {
    while (head_.next_ != &head_) remove(static_cast<T*>(head_.next_));
  }

  // Calls fn(T&) for each element; fn must not add or remove any.
  template <class Fn>
  void forEach(Fn&& fn) const {
    for (ListHook* hook = head_.next_; hook != &head_; hook = hook->next_) fn(*static_cast<T*>(hook));
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

private:
  struct Sentinel : ListHook {};
  Sentinel head_;
  size_t size_ = 0;
};

}  // namespace culvert::common
