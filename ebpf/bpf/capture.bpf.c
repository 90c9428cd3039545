// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Capture of pod egress (DESIGN.md §2 steps 2-3): cgroup/connect4 redirects captured
 * TCP connects from enrolled netns to the in-pod listener and records the original
 * destination; sock_ops re-keys that record by the client's address once the source
 * port exists. The rules are in lib/capture.h; this file is the shim over helpers. */
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ebpf/include/culvert_bpf.h"
#include "ebpf/bpf/lib/capture.h"

#define CV_ECONNREFUSED 111

/* Tunables, set by the loader before load (no #ifdef variants). Host byte order. */
const volatile __u16 cv_capture_port = CV_DEFAULT_CAPTURE_PORT;
const volatile __u32 cv_listener_ip4 = 0x7f000001; /* 127.0.0.1 */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* written rarely, by user space only */
	__uint(max_entries, CV_MAX_ENROLLED);
	__type(key, __u64); /* netns cookie */
	__type(value, struct cv_enrolled_value);
} cv_enrolled SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CV_MAX_CAPTURED);
	__type(key, struct cv_captured_key);
	__type(value, struct cv_captured_value);
} cv_captured SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} cv_sock_tag SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CV_MAX_PENDING);
	__type(key, __u64); /* socket cookie */
	__type(value, struct cv_pending_dst);
} cv_orig_dst_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CV_MAX_ORIG_DST);
	__type(key, struct cv_orig_dst_key);
	__type(value, struct cv_addr);
} cv_orig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cv_counters);
} cv_counters SEC(".maps");

/* The shim's environment for one connect4 invocation. */
struct cv_env4 {
	struct bpf_sock_addr *ctx;
	__u64 netns_cookie;
};

CV_INLINE int cv_shim_lookup_enrolled(void *env, struct cv_enrolled_value *out)
{
	struct cv_env4 *e = env;
	struct cv_enrolled_value *v;

	e->netns_cookie = bpf_get_netns_cookie(e->ctx);
	v = bpf_map_lookup_elem(&cv_enrolled, &e->netns_cookie);
	if (!v)
		return 0;
	*out = *v;
	return 1;
}

CV_INLINE int cv_tagged(struct bpf_sock *sk)
{
	__u32 *tag = bpf_sk_storage_get(&cv_sock_tag, sk, 0, 0);

	return tag && (*tag & CV_SOCK_TAG_CULVERT);
}

CV_INLINE int cv_shim_own_socket(void *env)
{
	struct cv_env4 *e = env;

	return cv_tagged(e->ctx->sk);
}

CV_INLINE int cv_shim_captured_lookup(void *env, const struct cv_captured_key *key)
{
	(void)env;
	return bpf_map_lookup_elem(&cv_captured, key) != 0;
}

CV_INLINE int cv_shim_listener_live(void *env)
{
	struct cv_env4 *e = env;
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	int live;

	/* Only daddr/dport set: matches a listener bound to 127.0.0.1 (or 0.0.0.0) in the
	 * caller's netns; reuseport groups answer with one of their sockets. */
	tuple.ipv4.daddr = bpf_htonl(cv_listener_ip4);
	tuple.ipv4.dport = bpf_htons(cv_capture_port);
	sk = bpf_sk_lookup_tcp(e->ctx, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	/* Someone else's socket on the capture port is not our listener (fail mode). */
	live = sk->state == BPF_TCP_LISTEN && cv_tagged(sk);
	bpf_sk_release(sk);
	return live;
}

CV_INLINE void cv_count(struct cv_decision d)
{
	__u32 zero = 0;
	struct cv_counters *c = bpf_map_lookup_elem(&cv_counters, &zero);
	__u64 *field;

	if (!c)
		return;
	field = cv_counter_for(c, d);
	if (field)
		*field += 1; /* per-CPU: no atomics needed */
}

SEC("cgroup/connect4")
int cv_connect4(struct bpf_sock_addr *ctx)
{
	struct cv_env4 env = { .ctx = ctx, .netns_cookie = 0 };
	struct cv_connect_facts facts = {};
	struct cv_pending_dst pending;
	struct cv_decision d;
	__u32 ip4 = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port; /* network order in the low 16 bits */
	__u64 cookie;

	facts.is_tcp = ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP;
	d = cv_connect4_evaluate(&env, &facts, ip4, port);

	if (d.verdict == CV_REDIRECT) {
		cookie = bpf_get_socket_cookie(ctx);
		cv_make_pending4(&pending, env.netns_cookie, ip4, port);
		if (bpf_map_update_elem(&cv_orig_dst_by_cookie, &cookie, &pending, BPF_ANY) == 0) {
			ctx->user_ip4 = bpf_htonl(cv_listener_ip4);
			ctx->user_port = bpf_htons(cv_capture_port);
		} else {
			d = cv_decide_record_failed(&facts);
		}
	}
	cv_count(d);

	if (d.verdict == CV_REFUSE) {
		/* Returning 0 alone gives EPERM; the fail-closed contract is ECONNREFUSED. */
		bpf_set_retval(-CV_ECONNREFUSED);
		return 0;
	}
	return 1;
}

SEC("sockops")
int cv_sockops(struct bpf_sock_ops *skops)
{
	struct cv_orig_dst_key key;
	struct cv_pending_dst *p;
	struct cv_addr dst;
	__u32 zero = 0;
	struct cv_counters *c;
	__u64 cookie;
	long err;

	/* TCP_CONNECT_CB runs before the SYN is sent (so before the proxy can accept) and
	 * after the source port is bound. Always called: no cb flags needed. */
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB || skops->family != CV_AF_INET)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	p = bpf_map_lookup_elem(&cv_orig_dst_by_cookie, &cookie);
	if (!p)
		return 1;
	cv_make_orig_dst_key4(&key, p->netns_cookie, skops->local_ip4, skops->local_port);
	dst = p->orig_dst;
	err = bpf_map_update_elem(&cv_orig_dst, &key, &dst, BPF_ANY);
	bpf_map_delete_elem(&cv_orig_dst_by_cookie, &cookie);

	c = bpf_map_lookup_elem(&cv_counters, &zero);
	if (c) {
		if (err)
			c->rekey_failed += 1;
		else
			c->rekeyed += 1;
	}
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
