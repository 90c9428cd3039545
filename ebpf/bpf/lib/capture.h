/* The capture decision (DESIGN.md §2 step 2, §5), as plain C over a helper shim.
 *
 * Compiled into capture.bpf.c (shim = BPF helpers and maps) and into tests/bpf (shim =
 * fakes), because cgroup_sock_addr and sock_ops programs cannot be run with
 * BPF_PROG_TEST_RUN on the target kernels.
 *
 * cv_decide() is a pure function of the facts gathered so far. When it needs a fact it
 * does not have yet it answers CV_NEED with the fact, and cv_connect4_evaluate() asks
 * the shim for exactly that fact. The rules therefore live in one place and the costly
 * fact (the listener lookup) is only gathered for captured destinations.
 *
 * The includer defines, before or after including this file, the shim:
 *
 *   CV_INLINE int cv_shim_lookup_enrolled(void *env, __u64 *netns_cookie,
 *                                         struct cv_enrolled_value *out);
 *       *netns_cookie = the caller's netns cookie; 1 and *out filled when that netns
 *       is enrolled, else 0.
 *   CV_INLINE int cv_shim_own_socket(void *env);
 *       1 when the connecting socket carries CV_SOCK_TAG_CULVERT.
 *   CV_INLINE const struct cv_captured_value *cv_shim_captured_lookup(void *env,
 *                                                const struct cv_captured_key *key);
 *       key's entry in cv_captured, or NULL.
 *   CV_INLINE const struct cv_captured_value *cv_shim_captured6_lookup(void *env,
 *                                                const struct cv_captured6_key *key);
 *       key's entry in cv_captured6, or NULL.
 *   CV_INLINE const struct cv_captured_value *cv_shim_captured_prefix(void *env,
 *                                                const struct cv_prefix_key *key);
 *       the longest prefix in cv_captured_prefix containing key, or NULL.
 *   CV_INLINE int cv_shim_tenant_scope(void *env, __u32 tenant_id, __u32 *slot);
 *       1 and *slot when the tenant is restricted (an entry in cv_tenant_scope), else 0.
 *   CV_INLINE int cv_shim_port_excluded(void *env, const struct cv_port_key *key);
 *       1 when key is in cv_excluded_ports.
 *   CV_INLINE int cv_shim_cidr_excluded(void *env, const struct cv_cidr_key *key);
 *       1 when a prefix in cv_excluded_cidrs contains key (longest-prefix lookup).
 *   CV_INLINE int cv_shim_listener_live(void *env, __u8 family);
 *       1 when a LISTEN socket tagged CV_SOCK_TAG_CULVERT is bound to the in-pod
 *       listener address of that family (127.0.0.1 or ::1) in the caller's netns.
 */
#pragma once

#include "ebpf/bpf/lib/capture_types.h"

CV_INLINE struct cv_decision cv_make_decision(__u8 verdict, __u8 reason, __u16 need)
{
	struct cv_decision d;
	d.verdict = verdict;
	d.reason = reason;
	d.need = need;
	return d;
}

CV_INLINE int cv_fact_known(const struct cv_connect_facts *f, __u32 fact)
{
	return (f->known & fact) != 0;
}

CV_INLINE int cv_fact_true(const struct cv_connect_facts *f, __u32 fact)
{
	return (f->value & fact) != 0;
}

CV_INLINE void cv_set_fact(struct cv_connect_facts *f, __u32 fact, int value)
{
	f->known |= fact;
	if (value)
		f->value |= fact;
	else
		f->value &= ~fact;
}

/* What the pod's fail mode makes of a connect that cannot be captured. */
CV_INLINE __u8 cv_fail_verdict(__u8 fail_mode)
{
	return fail_mode == CV_FAIL_CLOSED ? CV_REFUSE : CV_PASS;
}

/* The rules, in order:
 *   0. global bypass                    -> PASS (`culvertctl capture off`)
 *   1. not TCP                          -> PASS
 *   2. netns not enrolled               -> PASS (host, culvertd, unenrolled pods)
 *   3. culvert's own (tagged) socket    -> PASS (upstream sockets opened in the pod)
 *   4. destination not captured         -> PASS
 *   4b. the matched entry does not allow the pod's tenant -> PASS (out of scope)
 *   5. excluded port or CIDR, or one of the pod's own addresses -> PASS
 *   6. live, tagged in-pod listener     -> REDIRECT
 *   7. otherwise the pod's fail mode    -> PASS (open) or REFUSE (closed)
 * Never a redirect into nothing. */
CV_INLINE struct cv_decision cv_decide(const struct cv_connect_facts *f)
{
	if (f->bypass)
		return cv_make_decision(CV_PASS, CV_R_BYPASS, 0);
	if (!f->is_tcp)
		return cv_make_decision(CV_PASS, CV_R_NOT_TCP, 0);
	if (!cv_fact_known(f, CV_FACT_ENROLLED))
		return cv_make_decision(CV_NEED, CV_R_NONE, CV_FACT_ENROLLED);
	if (!cv_fact_true(f, CV_FACT_ENROLLED))
		return cv_make_decision(CV_PASS, CV_R_NOT_ENROLLED, 0);
	if (!cv_fact_known(f, CV_FACT_OWN_SOCKET))
		return cv_make_decision(CV_NEED, CV_R_NONE, CV_FACT_OWN_SOCKET);
	if (cv_fact_true(f, CV_FACT_OWN_SOCKET))
		return cv_make_decision(CV_PASS, CV_R_OWN_SOCKET, 0);
	if (!cv_fact_known(f, CV_FACT_CAPTURED))
		return cv_make_decision(CV_NEED, CV_R_NONE, CV_FACT_CAPTURED);
	if (!cv_fact_true(f, CV_FACT_CAPTURED))
		return cv_make_decision(CV_PASS, CV_R_NOT_CAPTURED, 0);
	if (!cv_fact_known(f, CV_FACT_IN_SCOPE))
		return cv_make_decision(CV_NEED, CV_R_NONE, CV_FACT_IN_SCOPE);
	if (!cv_fact_true(f, CV_FACT_IN_SCOPE))
		return cv_make_decision(CV_PASS, CV_R_OUT_OF_SCOPE, 0);
	if (!cv_fact_known(f, CV_FACT_EXCLUDED))
		return cv_make_decision(CV_NEED, CV_R_NONE, CV_FACT_EXCLUDED);
	if (cv_fact_true(f, CV_FACT_EXCLUDED))
		return cv_make_decision(CV_PASS, CV_R_EXCLUDED, 0);
	if (!cv_fact_known(f, CV_FACT_LISTENER_LIVE))
		return cv_make_decision(CV_NEED, CV_R_NONE, CV_FACT_LISTENER_LIVE);
	if (cv_fact_true(f, CV_FACT_LISTENER_LIVE))
		return cv_make_decision(CV_REDIRECT, CV_R_LISTENER_LIVE, 0);
	return cv_make_decision(cv_fail_verdict(f->fail_mode), CV_R_LISTENER_DOWN, 0);
}

/* REDIRECT was decided but the original destination could not be recorded: the proxy
 * could not route the connection, so treat it like a listener that is down. */
CV_INLINE struct cv_decision cv_decide_record_failed(const struct cv_connect_facts *f)
{
	return cv_make_decision(cv_fail_verdict(f->fail_mode), CV_R_RECORD_FAILED, 0);
}

/* 127.0.0.0/8, with ip4 in network order. */
CV_INLINE int cv_is_loopback4(__u32 ip4_net)
{
	return (((const __u8 *)&ip4_net)[0]) == 127;
}

/* ::1, with ip6 in network order. */
CV_INLINE int cv_is_loopback6(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0 && ((const __u8 *)&ip6[3])[0] == 0 &&
	       ((const __u8 *)&ip6[3])[1] == 0 && ((const __u8 *)&ip6[3])[2] == 0 &&
	       ((const __u8 *)&ip6[3])[3] == 1;
}

/* ::ffff:a.b.c.d (an IPv4 destination reached from a dual-stack IPv6 socket). */
CV_INLINE int cv_is_v4mapped(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ((const __u8 *)&ip6[2])[0] == 0 &&
	       ((const __u8 *)&ip6[2])[1] == 0 && ((const __u8 *)&ip6[2])[2] == 0xff &&
	       ((const __u8 *)&ip6[2])[3] == 0xff;
}

/* The destination of a connect4. */
CV_INLINE void cv_dst_from4(struct cv_dst *d, __u32 ip4_net, __u16 port_net)
{
	d->addr[0] = ip4_net;
	d->addr[1] = 0;
	d->addr[2] = 0;
	d->addr[3] = 0;
	d->port = port_net;
	d->family = CV_AF_INET;
	d->pad = 0;
}

/* The destination of a connect6; an IPv4-mapped address becomes the IPv4 it is. */
CV_INLINE void cv_dst_from6(struct cv_dst *d, const __u32 *ip6_net, __u16 port_net)
{
	if (cv_is_v4mapped(ip6_net)) {
		cv_dst_from4(d, ip6_net[3], port_net);
		return;
	}
	d->addr[0] = ip6_net[0];
	d->addr[1] = ip6_net[1];
	d->addr[2] = ip6_net[2];
	d->addr[3] = ip6_net[3];
	d->port = port_net;
	d->family = CV_AF_INET6;
	d->pad = 0;
}

/* Shim, defined by the includer (see the top of this file). */
CV_INLINE int cv_shim_lookup_enrolled(void *env, __u64 *netns_cookie, struct cv_enrolled_value *out);
CV_INLINE int cv_shim_own_socket(void *env);
CV_INLINE const struct cv_captured_value *cv_shim_captured_lookup(void *env, const struct cv_captured_key *key);
CV_INLINE const struct cv_captured_value *cv_shim_captured6_lookup(void *env, const struct cv_captured6_key *key);
CV_INLINE const struct cv_captured_value *cv_shim_captured_prefix(void *env, const struct cv_prefix_key *key);
CV_INLINE int cv_shim_tenant_scope(void *env, __u32 tenant_id, __u32 *slot);
CV_INLINE int cv_shim_port_excluded(void *env, const struct cv_port_key *key);
CV_INLINE int cv_shim_cidr_excluded(void *env, const struct cv_cidr_key *key);
CV_INLINE int cv_shim_listener_live(void *env, __u8 family);

/* The captured entry for ip4:port: the exact selector first, then "this port on any
 * IP". Wildcard selectors capture egress only: a loopback destination (the pod talking to
 * itself, e.g. a local sidecar on the same port) is left alone unless selected exactly.
 * The first entry found decides, as the worker's listener lookup does (exact, then any-IP):
 * a tenant not allowed the exact entry is not captured by a wildcard on the same port. */
CV_INLINE const struct cv_captured_value *cv_captured_entry4(void *env, __u32 ip4_net, __u16 port_net)
{
	const struct cv_captured_value *v;
	struct cv_captured_key key;

	/* 0.0.0.0 (which Linux connects to itself) is never a captured destination; its
	 * key would be the wildcard's. */
	if (ip4_net == 0)
		return 0;
	key.ip4 = ip4_net;
	key.port = port_net;
	key.pad = 0;
	v = cv_shim_captured_lookup(env, &key);
	if (v)
		return v;
	if (cv_is_loopback4(ip4_net))
		return 0;
	key.ip4 = 0;
	return cv_shim_captured_lookup(env, &key);
}

/* The same for IPv6: exact, then [::]:port unless the destination is ::1. */
CV_INLINE const struct cv_captured_value *cv_captured_entry6(void *env, const __u32 *ip6_net, __u16 port_net)
{
	const struct cv_captured_value *v;
	struct cv_captured6_key key;
	int i, any = 1;

	for (i = 0; i < 4; i++) {
		key.ip6[i] = ip6_net[i];
		if (ip6_net[i])
			any = 0;
	}
	if (any)
		return 0; /* :: likewise */
	key.port = port_net;
	key.pad = 0;
	v = cv_shim_captured6_lookup(env, &key);
	if (v)
		return v;
	if (cv_is_loopback6(ip6_net))
		return 0;
	for (i = 0; i < 4; i++)
		key.ip6[i] = 0;
	return cv_shim_captured6_lookup(env, &key);
}

/* A port on a destination prefix (an any-IP listener narrowed by its chains' prefix
 * ranges). Like the wildcard, never for loopback or unspecified destinations. */
CV_INLINE const struct cv_captured_value *cv_captured_entry_prefix(void *env, const struct cv_dst *d)
{
	struct cv_prefix_key key;
	int i;

	key.prefixlen = CV_PREFIX_KEY_FIXED_BITS + (d->family == CV_AF_INET ? 32 : 128);
	key.port = d->port;
	key.family = d->family;
	for (i = 0; i < 4; i++)
		key.addr[i] = d->addr[i];
	return cv_shim_captured_prefix(env, &key);
}

/* The captured entry that decides a connect to d, or NULL when d is not captured. */
CV_INLINE const struct cv_captured_value *cv_captured_entry(void *env, const struct cv_dst *d)
{
	const struct cv_captured_value *v;

	if (d->family == CV_AF_INET) {
		v = cv_captured_entry4(env, d->addr[0], d->port);
		if (v)
			return v;
		if (d->addr[0] == 0 || cv_is_loopback4(d->addr[0]))
			return 0;
		return cv_captured_entry_prefix(env, d);
	}
	v = cv_captured_entry6(env, d->addr, d->port);
	if (v)
		return v;
	if ((d->addr[0] | d->addr[1] | d->addr[2] | d->addr[3]) == 0 || cv_is_loopback6(d->addr))
		return 0;
	return cv_captured_entry_prefix(env, d);
}

/* Whether a captured entry allows a tenant: an unrestricted tenant (no cv_tenant_scope
 * entry) may use every captured destination, a restricted one those carrying its bit. A
 * slot out of range (never written by culvertd) allows nothing. */
CV_INLINE int cv_entry_allows(void *env, const struct cv_captured_value *v, __u32 tenant_id)
{
	__u32 slot = 0;

	if (!cv_shim_tenant_scope(env, tenant_id, &slot))
		return 1;
	if (slot >= CV_MAX_SCOPED_TENANTS)
		return 0;
	return (v->tenants[slot >> 6] >> (slot & 63)) & 1;
}

/* Gathers CAPTURED and, for a captured destination, IN_SCOPE with the same lookup. */
CV_INLINE void cv_gather_captured(void *env, struct cv_connect_facts *f, const struct cv_dst *d)
{
	const struct cv_captured_value *v = cv_captured_entry(env, d);

	cv_set_fact(f, CV_FACT_CAPTURED, v != 0);
	cv_set_fact(f, CV_FACT_IN_SCOPE, v != 0 && cv_entry_allows(env, v, f->tenant_id));
}

/* Excluded for every pod (netns cookie 0) or for this pod: the destination port, a
 * CIDR containing the destination, or one of the pod's own addresses (stored as
 * full-length CIDRs). */
CV_INLINE int cv_excluded(void *env, __u64 netns_cookie, const struct cv_dst *d)
{
	struct cv_port_key pk;
	struct cv_cidr_key ck;
	int scope, i;

	pk.port = d->port;
	pk.pad = 0;
	pk.pad2 = 0;
	ck.family = d->family;
	for (i = 0; i < 4; i++)
		ck.addr[i] = d->addr[i];
	ck.prefixlen = CV_CIDR_KEY_FIXED_BITS + (d->family == CV_AF_INET ? 32 : 128);
	for (scope = 0; scope < 2; scope++) {
		pk.netns_cookie = scope ? netns_cookie : 0;
		ck.netns_cookie = pk.netns_cookie;
		if (cv_shim_port_excluded(env, &pk) || cv_shim_cidr_excluded(env, &ck))
			return 1;
	}
	return 0;
}

CV_INLINE void cv_gather(void *env, struct cv_connect_facts *f, __u16 need, const struct cv_dst *d)
{
	struct cv_enrolled_value enrolled;
	__u64 cookie = 0;

	switch (need) {
	case CV_FACT_ENROLLED:
		enrolled.tenant_id = 0;
		enrolled.fail_mode = CV_FAIL_OPEN;
		if (cv_shim_lookup_enrolled(env, &cookie, &enrolled)) {
			f->tenant_id = enrolled.tenant_id;
			f->fail_mode = enrolled.fail_mode;
			f->netns_cookie = cookie;
			cv_set_fact(f, CV_FACT_ENROLLED, 1);
		} else {
			cv_set_fact(f, CV_FACT_ENROLLED, 0);
		}
		break;
	case CV_FACT_OWN_SOCKET:
		cv_set_fact(f, CV_FACT_OWN_SOCKET, cv_shim_own_socket(env));
		break;
	case CV_FACT_CAPTURED:
	case CV_FACT_IN_SCOPE:
		cv_gather_captured(env, f, d);
		break;
	case CV_FACT_EXCLUDED:
		cv_set_fact(f, CV_FACT_EXCLUDED, cv_excluded(env, f->netns_cookie, d));
		break;
	case CV_FACT_LISTENER_LIVE:
		cv_set_fact(f, CV_FACT_LISTENER_LIVE, cv_shim_listener_live(env, d->family));
		break;
	default:
		/* Unknown fact: mark everything known so the loop below ends (fail safe). */
		f->known = ~0u;
		break;
	}
}

/* Decide a connect() to d, gathering facts lazily. */
CV_INLINE struct cv_decision cv_connect_evaluate(void *env, struct cv_connect_facts *f, const struct cv_dst *d)
{
	struct cv_decision r = cv_make_decision(CV_PASS, CV_R_NONE, 0);
	int i;

	/* At most one gather per fact, then a final decision. */
	for (i = 0; i <= CV_FACT_COUNT; i++) {
		r = cv_decide(f);
		if (r.verdict != CV_NEED)
			return r;
		cv_gather(env, f, r.need, d);
	}
	return r.verdict == CV_NEED ? cv_make_decision(CV_PASS, CV_R_NONE, 0) : r;
}

/* Decide a connect() to ip4:port (network order). */
CV_INLINE struct cv_decision cv_connect4_evaluate(void *env, struct cv_connect_facts *f,
						  __u32 ip4_net, __u16 port_net)
{
	struct cv_dst d;

	cv_dst_from4(&d, ip4_net, port_net);
	return cv_connect_evaluate(env, f, &d);
}

/* The counter a decision is charged to; NULL for connects outside capture's scope
 * (bypass, not TCP, not enrolled), which would only add per-CPU writes to every connect. */
CV_INLINE __u64 *cv_counter_for(struct cv_counters *c, struct cv_decision d)
{
	switch (d.reason) {
	case CV_R_OWN_SOCKET:
	case CV_R_NOT_CAPTURED:
		return &c->passthrough;
	case CV_R_EXCLUDED:
		return &c->excluded;
	case CV_R_OUT_OF_SCOPE:
		return &c->out_of_scope;
	case CV_R_LISTENER_LIVE:
		return d.verdict == CV_REDIRECT ? &c->captured : 0;
	case CV_R_LISTENER_DOWN:
		return d.verdict == CV_REFUSE ? &c->refused : &c->fail_open;
	case CV_R_RECORD_FAILED:
		return &c->record_failed;
	default:
		return 0;
	}
}

/* The record connect4/6 leaves on the socket (source port still 0 there). */
CV_INLINE void cv_make_pending(struct cv_pending_dst *p, __u64 netns_cookie, const struct cv_dst *d)
{
	int i;

	for (i = 0; i < 4; i++)
		p->orig_dst.addr[i] = d->addr[i];
	p->orig_dst.port = d->port;
	p->orig_dst.family = d->family;
	p->orig_dst.pad = 0;
	p->pad = 0;
	p->netns_cookie = netns_cookie;
}

CV_INLINE void cv_make_pending4(struct cv_pending_dst *p, __u64 netns_cookie, __u32 ip4_net,
				__u16 port_net)
{
	struct cv_dst d;

	cv_dst_from4(&d, ip4_net, port_net);
	cv_make_pending(p, netns_cookie, &d);
}

/* Network order = most significant byte first in memory, on any host; written out so
 * this file needs no endian header in either build. */
CV_INLINE void cv_store_port_net(__u16 *out, __u32 port_host)
{
	__u16 port = (__u16)port_host;

	((__u8 *)out)[0] = (__u8)(port >> 8);
	((__u8 *)out)[1] = (__u8)(port & 0xff);
}

/* The key the proxy will look up, from sock_ops' view of the connecting socket.
 * sock_ops gives local_ip4 in network order but local_port in HOST order, while the
 * proxy's getpeername() gives sin_port in network order: convert here. */
CV_INLINE void cv_make_orig_dst_key4(struct cv_orig_dst_key *k, __u64 netns_cookie,
				     __u32 local_ip4_net, __u32 local_port_host)
{
	int i;

	k->netns_cookie = netns_cookie;
	for (i = 0; i < 4; i++)
		k->client.addr[i] = 0;
	k->client.addr[0] = local_ip4_net;
	cv_store_port_net(&k->client.port, local_port_host);
	k->client.family = CV_AF_INET;
	k->client.pad = 0;
	k->pad = 0;
}

/* The same for an AF_INET6 socket. A dual-stack socket connected to an IPv4(-mapped)
 * address reaches the IPv4 listener, whose accept() shows the client as IPv4: key it so. */
CV_INLINE void cv_make_orig_dst_key6(struct cv_orig_dst_key *k, __u64 netns_cookie,
				     const __u32 *local_ip6_net, __u32 local_port_host)
{
	int i;

	if (cv_is_v4mapped(local_ip6_net)) {
		cv_make_orig_dst_key4(k, netns_cookie, local_ip6_net[3], local_port_host);
		return;
	}
	k->netns_cookie = netns_cookie;
	for (i = 0; i < 4; i++)
		k->client.addr[i] = local_ip6_net[i];
	cv_store_port_net(&k->client.port, local_port_host);
	k->client.family = CV_AF_INET6;
	k->client.pad = 0;
	k->pad = 0;
}
