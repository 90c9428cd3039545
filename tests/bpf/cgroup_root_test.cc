// detectCgroup2Root's parsing of /proc/self/mountinfo (no privileges needed).
#include <gtest/gtest.h>

#include "ebpf/loader/cgroup.h"

namespace culvert::ebpf {
namespace {

constexpr const char* kHybrid =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

TEST(Cgroup2Root, HybridHierarchyUsesUnified) {
  auto root = cgroup2RootFromMountinfo(kHybrid);
  ASSERT_TRUE(root) << root.error().describe();
  EXPECT_EQ(*root, "/sys/fs/cgroup/unified");
}

TEST(Cgroup2Root, UnifiedHierarchyIsPreferred) {
  auto root = cgroup2RootFromMountinfo(
      "50 1 0:40 / /mnt/other\\040cg rw - cgroup2 cgroup2 rw\n"
      "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n");
  ASSERT_TRUE(root);
  EXPECT_EQ(*root, "/sys/fs/cgroup");
}

TEST(Cgroup2Root, OtherMountPointIsUnescaped) {
  auto root = cgroup2RootFromMountinfo("50 1 0:40 / /host/cg\\040v2 rw - cgroup2 cgroup2 rw\n");
  ASSERT_TRUE(root);
  EXPECT_EQ(*root, "/host/cg v2");
}

TEST(Cgroup2Root, BindMountOfASubtreeIsNotTheRoot) {
  auto root = cgroup2RootFromMountinfo("50 1 0:40 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
  EXPECT_FALSE(root);
}

TEST(Cgroup2Root, MissingCgroup2SaysHowToMountIt) {
  auto root = cgroup2RootFromMountinfo("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n");
  ASSERT_FALSE(root);
  EXPECT_NE(root.error().message.find("mount -t cgroup2"), std::string::npos);
}

TEST(Cgroup2Root, ThisHostHasOne) {
  auto root = detectCgroup2Root();
  ASSERT_TRUE(root) << root.error().describe();
  EXPECT_TRUE(isCgroup2Directory(*root));
}

}  // namespace
}  // namespace culvert::ebpf
