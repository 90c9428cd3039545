#include "proxy/common/recycled.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <unordered_map>

namespace culvert::common {
namespace {

#if !defined(__SANITIZE_ADDRESS__)  // under ASan every block goes back to the heap

// Each test has its own size of node, so its own (thread's) list: lists are per size.
template <int kTest>
struct Node : Recycled<Node<kTest>, 2> {
  virtual ~Node() = default;
  char payload[96 + 16 * kTest] = {};
};

// glibc's malloc alone would hand the blocks back last freed first too, but only within
// its 7-block cache, so each check frees three blocks against a limit of 2: the list keeps
// the first two, and the heap (not the list) would give the third back first.
TEST(Recycled, KeepsAtMostItsLimitAndHandsThemBackLastKeptFirst) {
  using N = Node<1>;
  N* made[3] = {new N, new N, new N};
  for (auto* node : made) delete node;
  auto a = std::make_unique<N>();
  auto b = std::make_unique<N>();
  EXPECT_EQ(a.get(), made[1]);
  EXPECT_EQ(b.get(), made[0]);
}

// A derived class is another size: its blocks are not the list's.
struct BigNode : Node<2> {
  char more[512] = {};
};

TEST(Recycled, ALargerDerivedObjectNeitherTakesNorLeavesABlock) {
  using N = Node<2>;
  auto* kept = new N;
  delete kept;  // the list holds `kept`
  std::unique_ptr<N> big = std::make_unique<BigNode>();
  EXPECT_NE(big.get(), kept);
  big.reset();  // through the virtual destructor, with BigNode's size: to the heap
  auto node = std::make_unique<N>();
  EXPECT_EQ(node.get(), kept);
}

TEST(Recycled, BlocksFreedOnAnotherThreadServeThatThread) {
  using N = Node<3>;
  N* made[3] = {new N, new N, new N};
  N* remade[2] = {};
  std::thread([&] {
    for (auto* node : made) delete node;
    remade[0] = new N;
    remade[1] = new N;
    delete remade[0];
    delete remade[1];
  }).join();  // the thread's list went back to the heap at its exit
  EXPECT_EQ(remade[0], made[1]);
  EXPECT_EQ(remade[1], made[0]);
}

// Nodes of a hash map: erased entries' nodes are the next ones inserted, as for Recycled.
TEST(RecyclingHashMap, ReusesTheNodesOfErasedEntries) {
  struct Value {
    char payload[200] = {};  // a node size of its own: no other test's list
  };
  RecyclingHashMap<int, Value, 2> map;
  map.reserve(16);  // the bucket array, allocated once, up front
  const Value* erased[3] = {&map[1], &map[2], &map[3]};
  map.erase(1);
  map.erase(2);
  map.erase(3);  // over the limit of 2: back to the heap
  EXPECT_EQ(&map[4], erased[1]);
  EXPECT_EQ(&map[5], erased[0]);
}

#endif

}  // namespace
}  // namespace culvert::common
