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
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct cv_pending_dst);
} cv_sock_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CV_MAX_CAPTURED);
	__type(key, struct cv_captured6_key);
	__type(value, struct cv_captured_value);
} cv_captured6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CV_MAX_CAPTURED_PREFIXES);
	__type(key, struct cv_prefix_key);
	__type(value, struct cv_captured_value);
} cv_captured_prefix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CV_MAX_EXCLUDED_PORTS);
	__type(key, struct cv_port_key);
	__type(value, struct cv_flags_value);
} cv_excluded_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CV_MAX_EXCLUDED_CIDRS);
	__type(key, struct cv_cidr_key);
	__type(value, struct cv_flags_value);
} cv_excluded_cidrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cv_config);
} cv_config SEC(".maps");

/* Restricted tenants' scope slots (tenant id -> bit of cv_captured_value.tenants). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CV_MAX_SCOPED_TENANTS);
	__type(key, __u32);
	__type(value, struct cv_tenant_scope_value);
} cv_tenant_scope SEC(".maps");

/* Per-pod counters: entries made by user space at enrollment (the programs only look
 * up), deleted at unenrollment; per-tenant figures are sums over a tenant's pods. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, CV_MAX_ENROLLED);
	__type(key, __u64); /* netns cookie */
	__type(value, struct cv_counters);
} cv_pod_counters SEC(".maps");

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

/* The shim's environment for one connect4/6 invocation. */
struct cv_env {
	struct bpf_sock_addr *ctx;
};

CV_INLINE int cv_shim_lookup_enrolled(void *env, __u64 *netns_cookie, struct cv_enrolled_value *out)
{
	struct cv_env *e = env;
	struct cv_enrolled_value *v;
	__u64 cookie = bpf_get_netns_cookie(e->ctx);

	*netns_cookie = cookie;
	v = bpf_map_lookup_elem(&cv_enrolled, &cookie);
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
	struct cv_env *e = env;

	return cv_tagged(e->ctx->sk);
}

CV_INLINE const struct cv_captured_value *cv_shim_captured_lookup(void *env, const struct cv_captured_key *key)
{
	(void)env;
	return bpf_map_lookup_elem(&cv_captured, key);
}

CV_INLINE const struct cv_captured_value *cv_shim_captured6_lookup(void *env, const struct cv_captured6_key *key)
{
	(void)env;
	return bpf_map_lookup_elem(&cv_captured6, key);
}

CV_INLINE const struct cv_captured_value *cv_shim_captured_prefix(void *env, const struct cv_prefix_key *key)
{
	(void)env;
	return bpf_map_lookup_elem(&cv_captured_prefix, key);
}

CV_INLINE int cv_shim_tenant_scope(void *env, __u32 tenant_id, __u32 *slot)
{
	struct cv_tenant_scope_value *v = bpf_map_lookup_elem(&cv_tenant_scope, &tenant_id);

	(void)env;
	if (!v)
		return 0;
	*slot = v->slot;
	return 1;
}

CV_INLINE int cv_shim_port_excluded(void *env, const struct cv_port_key *key)
{
	(void)env;
	return bpf_map_lookup_elem(&cv_excluded_ports, key) != 0;
}

CV_INLINE int cv_shim_cidr_excluded(void *env, const struct cv_cidr_key *key)
{
	(void)env;
	return bpf_map_lookup_elem(&cv_excluded_cidrs, key) != 0;
}

CV_INLINE int cv_shim_listener_live(void *env, __u8 family)
{
	struct cv_env *e = env;
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	int live;

	/* Only daddr/dport set: matches a listener bound to the in-pod listener address
	 * (or the wildcard) in the caller's netns; reuseport groups answer with one of
	 * their sockets. An IPv4(-mapped) destination goes to the 127.0.0.1 group. */
	if (family == CV_AF_INET) {
		tuple.ipv4.daddr = bpf_htonl(cv_listener_ip4);
		tuple.ipv4.dport = bpf_htons(cv_capture_port);
		sk = bpf_sk_lookup_tcp(e->ctx, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	} else {
		tuple.ipv6.daddr[3] = bpf_htonl(1); /* ::1 */
		tuple.ipv6.dport = bpf_htons(cv_capture_port);
		sk = bpf_sk_lookup_tcp(e->ctx, &tuple, sizeof(tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return 0;
	/* Someone else's socket on the capture port is not our listener (fail mode). */
	live = sk->state == BPF_TCP_LISTEN && cv_tagged(sk);
	bpf_sk_release(sk);
	return live;
}

CV_INLINE void cv_bump(struct cv_counters *c, struct cv_decision d)
{
	__u64 *field;

	if (!c)
		return;
	field = cv_counter_for(c, d);
	if (field)
		*field += 1; /* per-CPU: no atomics needed */
}

CV_INLINE void cv_count(struct cv_decision d, const struct cv_connect_facts *f)
{
	__u32 zero = 0;
	__u64 cookie = f->netns_cookie;

	cv_bump(bpf_map_lookup_elem(&cv_counters, &zero), d);
	if (cv_fact_known(f, CV_FACT_ENROLLED) && cv_fact_true(f, CV_FACT_ENROLLED))
		cv_bump(bpf_map_lookup_elem(&cv_pod_counters, &cookie), d);
}

CV_INLINE int cv_bypass(void)
{
	__u32 zero = 0;
	struct cv_config *cfg = bpf_map_lookup_elem(&cv_config, &zero);

	return cfg && cfg->bypass;
}

/* Decides one connect; on REDIRECT records the original destination on the socket.
 * Returns the final decision (REDIRECT only when the record was written). */
CV_INLINE struct cv_decision cv_connect(struct bpf_sock_addr *ctx, const struct cv_dst *dst)
{
	struct cv_env env = { .ctx = ctx };
	struct cv_connect_facts facts = {};
	struct cv_pending_dst *p;
	struct cv_decision d;

	facts.bypass = cv_bypass();
	facts.is_tcp = ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP;
	d = cv_connect_evaluate(&env, &facts, dst);

	if (d.verdict == CV_REDIRECT) {
		p = bpf_sk_storage_get(&cv_sock_dst, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (p)
			cv_make_pending(p, facts.netns_cookie, dst);
		else
			d = cv_decide_record_failed(&facts);
	}
	cv_count(d, &facts);

	if (d.verdict == CV_REFUSE) {
		/* Returning 0 alone gives EPERM; the fail-closed contract is ECONNREFUSED. */
		bpf_set_retval(-CV_ECONNREFUSED);
	}
	return d;
}

SEC("cgroup/connect4")
int cv_connect4(struct bpf_sock_addr *ctx)
{
	struct cv_dst dst;
	struct cv_decision d;

	cv_dst_from4(&dst, ctx->user_ip4, (__u16)ctx->user_port); /* port: network order, low 16 bits */
	d = cv_connect(ctx, &dst);
	if (d.verdict == CV_REDIRECT) {
		ctx->user_ip4 = bpf_htonl(cv_listener_ip4);
		ctx->user_port = bpf_htons(cv_capture_port);
	}
	return d.verdict == CV_REFUSE ? 0 : 1;
}

SEC("cgroup/connect6")
int cv_connect6(struct bpf_sock_addr *ctx)
{
	struct cv_dst dst;
	struct cv_decision d;
	__u32 ip6[4];

	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	cv_dst_from6(&dst, ip6, (__u16)ctx->user_port);
	d = cv_connect(ctx, &dst);
	if (d.verdict == CV_REDIRECT) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		if (dst.family == CV_AF_INET) {
			/* Dual-stack socket to an IPv4 destination: ::ffff:127.0.0.1. */
			ctx->user_ip6[2] = bpf_htonl(0xffff);
			ctx->user_ip6[3] = bpf_htonl(cv_listener_ip4);
		} else {
			ctx->user_ip6[2] = 0;
			ctx->user_ip6[3] = bpf_htonl(1); /* ::1 */
		}
		ctx->user_port = bpf_htons(cv_capture_port);
	}
	return d.verdict == CV_REFUSE ? 0 : 1;
}

/* The app asks who it is connected to: the VIP it dialled, not the in-pod listener. */
SEC("cgroup/getpeername4")
int cv_getpeername4(struct bpf_sock_addr *ctx)
{
	struct cv_pending_dst *p = bpf_sk_storage_get(&cv_sock_dst, ctx->sk, 0, 0);

	if (!p || p->orig_dst.family != CV_AF_INET || ctx->user_port != bpf_htons(cv_capture_port))
		return 1;
	ctx->user_ip4 = p->orig_dst.addr[0];
	ctx->user_port = p->orig_dst.port;
	return 1;
}

SEC("cgroup/getpeername6")
int cv_getpeername6(struct bpf_sock_addr *ctx)
{
	struct cv_pending_dst *p = bpf_sk_storage_get(&cv_sock_dst, ctx->sk, 0, 0);

	if (!p || ctx->user_port != bpf_htons(cv_capture_port))
		return 1;
	if (p->orig_dst.family == CV_AF_INET) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = p->orig_dst.addr[0];
	} else {
		ctx->user_ip6[0] = p->orig_dst.addr[0];
		ctx->user_ip6[1] = p->orig_dst.addr[1];
		ctx->user_ip6[2] = p->orig_dst.addr[2];
		ctx->user_ip6[3] = p->orig_dst.addr[3];
	}
	ctx->user_port = p->orig_dst.port;
	return 1;
}

/* The cv_orig_dst key of a connecting socket, from its bound source address. */
CV_INLINE int cv_sockops_key(struct bpf_sock_ops *skops, __u64 netns_cookie, struct cv_orig_dst_key *key)
{
	__u32 ip6[4];

	if (skops->family == CV_AF_INET) {
		cv_make_orig_dst_key4(key, netns_cookie, skops->local_ip4, skops->local_port);
		return 0;
	}
	if (skops->family == CV_AF_INET6) {
		ip6[0] = skops->local_ip6[0];
		ip6[1] = skops->local_ip6[1];
		ip6[2] = skops->local_ip6[2];
		ip6[3] = skops->local_ip6[3];
		cv_make_orig_dst_key6(key, netns_cookie, ip6, skops->local_port);
		return 0;
	}
	return -1;
}

/* TCP_CONNECT_CB runs before the SYN is sent (so before the proxy can accept) and after
 * the source port is bound. Always called: no cb flags needed. */
CV_INLINE void cv_sockops_rekey(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct cv_orig_dst_key key;
	struct cv_pending_dst *p;
	struct cv_counters *c;
	struct cv_addr dst;
	__u32 zero = 0;
	long err;

	if (!sk)
		return;
	p = bpf_sk_storage_get(&cv_sock_dst, sk, 0, 0);
	if (!p || cv_sockops_key(skops, p->netns_cookie, &key) != 0)
		return;
	dst = p->orig_dst;
	err = bpf_map_update_elem(&cv_orig_dst, &key, &dst, BPF_ANY);
	if (!err)
		bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);

	c = bpf_map_lookup_elem(&cv_counters, &zero);
	if (c) {
		if (err)
			c->rekey_failed += 1;
		else
			c->rekeyed += 1;
	}
}

SEC("sockops")
int cv_sockops(struct bpf_sock_ops *skops)
{
	struct cv_orig_dst_key key;

	if (skops->op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		cv_sockops_rekey(skops);
		return 1;
	}
	/* The state callback is on only for re-keyed sockets, but it runs at every state
	 * change of theirs (about four a connection), so the transition is tested before
	 * any lookup, and the key needs no socket storage: the netns cookie comes from the
	 * helper, the port is still the socket's at this point.
	 *
	 * The client socket is aborted (reset, refused, timed out: the proxy will never
	 * accept it): its record goes with it. A graceful close (FIN) leaves the connection
	 * in the listener's queue, where the proxy accepts it and takes the record, so only
	 * aborts from SYN_SENT/ESTABLISHED delete here (a client that closed and exited
	 * reaches CLOSE from FIN_WAIT2 at once, as the kernel swaps in a timewait socket,
	 * while its connection still waits to be accepted). */
	if (skops->op != BPF_SOCK_OPS_STATE_CB || skops->args[1] != BPF_TCP_CLOSE ||
	    (skops->args[0] != BPF_TCP_SYN_SENT && skops->args[0] != BPF_TCP_ESTABLISHED))
		return 1;
	if (cv_sockops_key(skops, bpf_get_netns_cookie(skops), &key) == 0)
		bpf_map_delete_elem(&cv_orig_dst, &key);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
