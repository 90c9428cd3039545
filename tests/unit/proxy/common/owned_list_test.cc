#include "proxy/common/owned_list.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace culvert::common {
namespace {

struct Element : ListHook {
  Element(int id, std::vector<int>& destroyed) : id(id), destroyed(destroyed) {}
  ~Element() { destroyed.push_back(id); }
  int id;
  std::vector<int>& destroyed;
};

std::vector<int> ids(const OwnedList<Element>& list) {
  std::vector<int> out;
  list.forEach([&](Element& e) { out.push_back(e.id); });
  return out;
}

TEST(OwnedListTest, AddsRemovesAndIteratesNewestFirst) {
  std::vector<int> destroyed;
  OwnedList<Element> list;
  EXPECT_TRUE(list.empty());
  Element* one = list.add(std::make_unique<Element>(1, destroyed));
  Element* two = list.add(std::make_unique<Element>(2, destroyed));
  list.add(std::make_unique<Element>(3, destroyed));
  EXPECT_EQ(list.size(), 3u);
  EXPECT_EQ(ids(list), (std::vector<int>{3, 2, 1}));

  std::unique_ptr<Element> removed = list.remove(two);
  ASSERT_EQ(removed.get(), two);
  EXPECT_TRUE(destroyed.empty()) << "remove hands the element back, it does not destroy it";
  EXPECT_EQ(ids(list), (std::vector<int>{3, 1}));
  EXPECT_EQ(list.remove(two), nullptr) << "an element in no list is not removed twice";
  removed.reset();
  EXPECT_EQ(destroyed, (std::vector<int>{2}));

  list.remove(one).reset();
  EXPECT_EQ(ids(list), (std::vector<int>{3}));
  EXPECT_EQ(list.size(), 1u);
}

TEST(OwnedListTest, DestroysWhatItStillOwns) {
  std::vector<int> destroyed;
  {
    OwnedList<Element> list;
    list.add(std::make_unique<Element>(1, destroyed));
    list.add(std::make_unique<Element>(2, destroyed));
  }
  EXPECT_EQ(destroyed, (std::vector<int>{2, 1}));
}

// An element whose destructor removes another (a session closing its peer) while the
// list is cleared.
struct Linked : ListHook {
  Linked(OwnedList<Linked>& list, int& destroyed) : list(list), destroyed(destroyed) {}
  ~Linked() {
    ++destroyed;
    if (peer != nullptr) list.remove(peer).reset();
  }
  OwnedList<Linked>& list;
  int& destroyed;
  Linked* peer = nullptr;
};

TEST(OwnedListTest, ClearCopesWithElementsRemovingOthers) {
  int destroyed = 0;
  OwnedList<Linked> list;
  Linked* a = list.add(std::make_unique<Linked>(list, destroyed));
  list.add(std::make_unique<Linked>(list, destroyed));
  Linked* c = list.add(std::make_unique<Linked>(list, destroyed));
  c->peer = a;
  list.clear();
  EXPECT_EQ(destroyed, 3);
  EXPECT_TRUE(list.empty());
}

}  // namespace
}  // namespace culvert::common
