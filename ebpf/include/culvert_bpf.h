/* Structures shared by the BPF programs and user space (DESIGN.md §6 ebpf/include).
 *
 * Plain C, fixed-width fields, explicit padding: the kernel compares map keys byte by
 * byte, so every padding byte is a named field that writers zero. Sizes are asserted so
 * a change to any of them is a deliberate layout change: bump CV_LAYOUT_VERSION, which
 * names the pin directory (<pin_root>/v<N>/), so a newer culvertd can migrate or refuse.
 *
 * Byte order: addresses and ports in keys/values are network order (what sockaddr and
 * the bpf_sock_addr ctx carry), except where a field says otherwise.
 */
#pragma once

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#ifdef __cplusplus
#define CV_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define CV_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define CV_LAYOUT_VERSION 3

/* Address families as the kernel numbers them (AF_INET/AF_INET6), without pulling
 * socket headers into BPF code. */
#define CV_AF_INET 2
#define CV_AF_INET6 10

/* Default in-pod listener port (tunable cv_capture_port overrides it before load). */
#define CV_DEFAULT_CAPTURE_PORT 15001

/* Map capacities. cv_orig_dst is an LRU (preallocated, about 100 bytes an entry); its
 * entries are deleted on accept or when the client socket closes, the LRU is a backstop. */
#define CV_MAX_ENROLLED 16384
#define CV_MAX_CAPTURED 65536
#define CV_MAX_ORIG_DST 65536

/* ---- cv_enrolled: HASH, key = __u64 netns cookie ------------------------------ */
enum cv_fail_mode {
	CV_FAIL_OPEN = 0,   /* listener down: connect() untouched */
	CV_FAIL_CLOSED = 1, /* listener down: connect() fails with ECONNREFUSED */
};

struct cv_enrolled_value {
	__u32 tenant_id;
	__u8 fail_mode; /* enum cv_fail_mode */
	__u8 flags;     /* reserved, 0 */
	__u16 pad;
};
CV_STATIC_ASSERT(sizeof(struct cv_enrolled_value) == 8, "cv_enrolled_value layout");

/* ---- cv_captured: HASH, IPv4 capture selectors ---------------------------------
 * ip4 == 0 means "this port on any IP" (a 0.0.0.0:port virtual listener). IPv6 gets
 * its own map (cv_captured6) with a 16-byte address: per-family maps keep the IPv4
 * key at 8 bytes and each connect hook does exactly one family's lookups. */
struct cv_captured_key {
	__u32 ip4;  /* network order */
	__u16 port; /* network order */
	__u16 pad;  /* 0 */
};
CV_STATIC_ASSERT(sizeof(struct cv_captured_key) == 8, "cv_captured_key layout");

/* Value of every captured-destination map (cv_captured, cv_captured6,
 * cv_captured_prefix): the restricted tenants that may use the destination, one bit per
 * scope slot (cv_tenant_scope). A tenant without a slot is unrestricted and may use every
 * captured destination; a restricted tenant only those whose bit is set. */
#define CV_MAX_SCOPED_TENANTS 256
#define CV_SCOPE_WORDS (CV_MAX_SCOPED_TENANTS / 64)
struct cv_captured_value {
	__u64 tenants[CV_SCOPE_WORDS];
};
CV_STATIC_ASSERT(sizeof(struct cv_captured_value) == 32, "cv_captured_value layout");

/* ---- cv_tenant_scope: HASH, key = __u32 tenant id (cv_enrolled_value.tenant_id) -----
 * Present only for tenants whose Tenant resource restricts their listeners: the bit of
 * cv_captured_value.tenants that says which captured destinations they may use. */
struct cv_tenant_scope_value {
	__u32 slot; /* < CV_MAX_SCOPED_TENANTS */
};
CV_STATIC_ASSERT(sizeof(struct cv_tenant_scope_value) == 4, "cv_tenant_scope_value layout");

/* Exclusion maps keep a plain flags value. */
struct cv_flags_value {
	__u32 flags; /* reserved, 0 */
};
CV_STATIC_ASSERT(sizeof(struct cv_flags_value) == 4, "cv_flags_value layout");

/* ---- cv_sock_tag: SK_STORAGE, value __u32 ---------------------------------------
 * Set by culvertd right after socket() (bpf_map_update_elem(map, &fd, &tag)). Any
 * socket carrying CV_SOCK_TAG_CULVERT is culvert's own: never captured, and the only
 * kind of listener that counts as live. */
#define CV_SOCK_TAG_CULVERT 0x1u

/* ---- cv_captured6: HASH, IPv6 capture selectors ---------------------------------
 * ip6 all zero means "this port on any IPv6 address" (a [::]:port virtual listener).
 * IPv4-mapped destinations (::ffff:a.b.c.d from a dual-stack socket) are looked up in
 * cv_captured as the IPv4 address they are. */
struct cv_captured6_key {
	__u32 ip6[4]; /* network order */
	__u16 port;   /* network order */
	__u16 pad;    /* 0 */
};
CV_STATIC_ASSERT(sizeof(struct cv_captured6_key) == 20, "cv_captured6_key layout");

/* ---- cv_captured_prefix: LPM_TRIE, a port on a destination prefix ------------
 * An any-IP virtual listener whose filter chains all name destination prefix ranges
 * captures only those prefixes (filter_chain_match narrows it). The trie matches port,
 * family and address as one bit string: prefixlen = CV_PREFIX_KEY_FIXED_BITS + the
 * range's length. IPv4 uses addr[0]. Value: struct cv_captured_value (tenant scope). */
struct cv_prefix_key {
	__u32 prefixlen;
	__u16 port;   /* network order */
	__u16 family; /* CV_AF_INET / CV_AF_INET6 */
	__u32 addr[4];
};
CV_STATIC_ASSERT(sizeof(struct cv_prefix_key) == 24, "cv_prefix_key layout");
#define CV_PREFIX_KEY_FIXED_BITS 32 /* port (16) + family (16) */
#define CV_MAX_CAPTURED_PREFIXES 16384

/* ---- exclusions: never captured ------------------------------------------------
 * netns_cookie 0 = every pod (bootstrap capture.exclude_*), else that pod only (its
 * enrollment record's exclude_* and its own addresses). Both scopes are looked up. */

/* cv_excluded_ports: HASH, value struct cv_flags_value (0). Destination port. */
struct cv_port_key {
	__u64 netns_cookie;
	__u16 port; /* network order */
	__u16 pad;  /* 0 */
	__u32 pad2; /* 0 */
};
CV_STATIC_ASSERT(sizeof(struct cv_port_key) == 16, "cv_port_key layout");

/* cv_excluded_cidrs: LPM_TRIE, value struct cv_flags_value. The trie matches
 * family, cookie and address as one bit string: prefixlen = CV_CIDR_KEY_FIXED_BITS +
 * the CIDR's length. IPv4 uses addr[0]. */
struct cv_cidr_key {
	__u32 prefixlen;
	__u32 family; /* CV_AF_INET / CV_AF_INET6 */
	__u64 netns_cookie;
	__u32 addr[4]; /* network order */
};
CV_STATIC_ASSERT(sizeof(struct cv_cidr_key) == 32, "cv_cidr_key layout");
#define CV_CIDR_KEY_FIXED_BITS 96 /* family (32) + netns cookie (64) */
#define CV_MAX_EXCLUDED_PORTS 16384
#define CV_MAX_EXCLUDED_CIDRS 65536

/* ---- cv_config: ARRAY, one entry (key 0), written by user space ----------------- */
struct cv_config {
	__u32 bypass; /* 1: `culvertctl capture off`: every connect untouched */
	__u32 pad;
};
CV_STATIC_ASSERT(sizeof(struct cv_config) == 8, "cv_config layout");

/* ---- original destination records ----------------------------------------------
 * Family-tagged so IPv4 and IPv6 share the maps and user space has one lookup path.
 * IPv4 uses addr[0]; addr[1..3] are 0. */
struct cv_addr {
	__u32 addr[4]; /* network order */
	__u16 port;    /* network order */
	__u8 family;   /* CV_AF_INET / CV_AF_INET6 */
	__u8 pad;      /* 0 */
};
CV_STATIC_ASSERT(sizeof(struct cv_addr) == 20, "cv_addr layout");

/* cv_sock_dst: SK_STORAGE on the app's connecting socket. Written by connect4/6 (the
 * source port is still 0 there); sock_ops copies it to cv_orig_dst once the port is
 * bound and deletes that copy when the socket closes; getpeername4/6 report it to the
 * app. Lives and dies with the socket, so it never leaks. A destination reached via an
 * IPv4-mapped IPv6 address is stored as IPv4. */
struct cv_pending_dst {
	struct cv_addr orig_dst;
	__u32 pad;
	__u64 netns_cookie;
};
CV_STATIC_ASSERT(sizeof(struct cv_pending_dst) == 32, "cv_pending_dst layout");

/* cv_orig_dst: LRU_HASH, what the proxy looks up for an accepted socket:
 * getpeername() gives client addr:port, SO_NETNS_COOKIE gives the netns. */
struct cv_orig_dst_key {
	__u64 netns_cookie;
	struct cv_addr client;
	__u32 pad; /* 0 */
};
CV_STATIC_ASSERT(sizeof(struct cv_orig_dst_key) == 32, "cv_orig_dst_key layout");

/* value: struct cv_addr (the original destination). */

/* ---- cv_counters: PERCPU_ARRAY, one entry (key 0) ------------------------------ */
struct cv_counters {
	__u64 captured;       /* redirected to the in-pod listener */
	__u64 passthrough;    /* enrolled netns, TCP, not captured or culvert's own socket */
	__u64 refused;        /* listener down, fail closed */
	__u64 fail_open;      /* listener down, fail open: connect untouched */
	__u64 record_failed;  /* could not record the original destination */
	__u64 rekeyed;        /* sock_ops moved a record to cv_orig_dst */
	__u64 rekey_failed;   /* sock_ops could not write cv_orig_dst */
	__u64 excluded;       /* enrolled, captured destination, but excluded port/CIDR/own address */
	__u64 out_of_scope;   /* captured destination outside the pod's tenant's scope: untouched */
};
CV_STATIC_ASSERT(sizeof(struct cv_counters) == 72, "cv_counters layout");
