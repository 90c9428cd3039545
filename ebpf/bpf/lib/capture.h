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
 *   CV_INLINE int cv_shim_lookup_enrolled(void *env, struct cv_enrolled_value *out);
 *       1 and *out filled when the caller's netns is enrolled, else 0.
 *   CV_INLINE int cv_shim_own_socket(void *env);
 *       1 when the connecting socket carries CV_SOCK_TAG_CULVERT.
 *   CV_INLINE int cv_shim_captured_lookup(void *env, const struct cv_captured_key *key);
 *       1 when key is in cv_captured.
 *   CV_INLINE int cv_shim_listener_live(void *env);
 *       1 when a LISTEN socket tagged CV_SOCK_TAG_CULVERT is bound to the in-pod
 *       listener address in the caller's netns.
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
 *   1. not TCP                          -> PASS
 *   2. netns not enrolled               -> PASS (host, culvertd, unenrolled pods)
 *   3. culvert's own (tagged) socket    -> PASS (upstream sockets opened in the pod)
 *   4. destination not captured         -> PASS
 *   5. live, tagged in-pod listener     -> REDIRECT
 *   6. otherwise the pod's fail mode    -> PASS (open) or REFUSE (closed)
 * Never a redirect into nothing. */
CV_INLINE struct cv_decision cv_decide(const struct cv_connect_facts *f)
{
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

/* Shim, defined by the includer (see the top of this file). */
CV_INLINE int cv_shim_lookup_enrolled(void *env, struct cv_enrolled_value *out);
CV_INLINE int cv_shim_own_socket(void *env);
CV_INLINE int cv_shim_captured_lookup(void *env, const struct cv_captured_key *key);
CV_INLINE int cv_shim_listener_live(void *env);

/* Is ip4:port captured? The exact selector first, then "this port on any IP".
 * Wildcard selectors capture egress only: a loopback destination (the pod talking to
 * itself, e.g. a local sidecar on the same port) is left alone unless selected exactly. */
CV_INLINE int cv_captured4(void *env, __u32 ip4_net, __u16 port_net)
{
	struct cv_captured_key key;

	key.ip4 = ip4_net;
	key.port = port_net;
	key.pad = 0;
	if (cv_shim_captured_lookup(env, &key))
		return 1;
	if (ip4_net == 0 || cv_is_loopback4(ip4_net))
		return 0;
	key.ip4 = 0;
	return cv_shim_captured_lookup(env, &key);
}

CV_INLINE void cv_gather4(void *env, struct cv_connect_facts *f, __u16 need, __u32 ip4_net,
			  __u16 port_net)
{
	struct cv_enrolled_value enrolled;

	switch (need) {
	case CV_FACT_ENROLLED:
		enrolled.tenant_id = 0;
		enrolled.fail_mode = CV_FAIL_OPEN;
		if (cv_shim_lookup_enrolled(env, &enrolled)) {
			f->tenant_id = enrolled.tenant_id;
			f->fail_mode = enrolled.fail_mode;
			cv_set_fact(f, CV_FACT_ENROLLED, 1);
		} else {
			cv_set_fact(f, CV_FACT_ENROLLED, 0);
		}
		break;
	case CV_FACT_OWN_SOCKET:
		cv_set_fact(f, CV_FACT_OWN_SOCKET, cv_shim_own_socket(env));
		break;
	case CV_FACT_CAPTURED:
		cv_set_fact(f, CV_FACT_CAPTURED, cv_captured4(env, ip4_net, port_net));
		break;
	case CV_FACT_LISTENER_LIVE:
		cv_set_fact(f, CV_FACT_LISTENER_LIVE, cv_shim_listener_live(env));
		break;
	default:
		/* Unknown fact: mark everything known so the loop below ends (fail safe). */
		f->known = ~0u;
		break;
	}
}

/* Decide a connect() to ip4:port (network order), gathering facts lazily. */
CV_INLINE struct cv_decision cv_connect4_evaluate(void *env, struct cv_connect_facts *f,
						  __u32 ip4_net, __u16 port_net)
{
	struct cv_decision d = cv_make_decision(CV_PASS, CV_R_NONE, 0);
	int i;

	/* At most one gather per fact, then a final decision. */
	for (i = 0; i <= CV_FACT_COUNT; i++) {
		d = cv_decide(f);
		if (d.verdict != CV_NEED)
			return d;
		cv_gather4(env, f, d.need, ip4_net, port_net);
	}
	return d.verdict == CV_NEED ? cv_make_decision(CV_PASS, CV_R_NONE, 0) : d;
}

/* The counter a decision is charged to; NULL for connects outside capture's scope
 * (not TCP, not enrolled), which would only add per-CPU writes to every connect. */
CV_INLINE __u64 *cv_counter_for(struct cv_counters *c, struct cv_decision d)
{
	switch (d.reason) {
	case CV_R_OWN_SOCKET:
	case CV_R_NOT_CAPTURED:
		return &c->passthrough;
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

/* The record connect4 leaves under the socket cookie (source port still 0 there). */
CV_INLINE void cv_make_pending4(struct cv_pending_dst *p, __u64 netns_cookie, __u32 ip4_net,
				__u16 port_net)
{
	int i;

	for (i = 0; i < 4; i++)
		p->orig_dst.addr[i] = 0;
	p->orig_dst.addr[0] = ip4_net;
	p->orig_dst.port = port_net;
	p->orig_dst.family = CV_AF_INET;
	p->orig_dst.pad = 0;
	p->pad = 0;
	p->netns_cookie = netns_cookie;
}

/* The key the proxy will look up, from sock_ops' view of the connecting socket.
 * sock_ops gives local_ip4 in network order but local_port in HOST order, while the
 * proxy's getpeername() gives sin_port in network order: convert here. */
CV_INLINE void cv_make_orig_dst_key4(struct cv_orig_dst_key *k, __u64 netns_cookie,
				     __u32 local_ip4_net, __u32 local_port_host)
{
	__u16 port = (__u16)local_port_host;
	int i;

	k->netns_cookie = netns_cookie;
	for (i = 0; i < 4; i++)
		k->client.addr[i] = 0;
	k->client.addr[0] = local_ip4_net;
	/* Network order = most significant byte first in memory, on any host; written
	 * out so this file needs no endian header in either build. */
	((__u8 *)&k->client.port)[0] = (__u8)(port >> 8);
	((__u8 *)&k->client.port)[1] = (__u8)(port & 0xff);
	k->client.family = CV_AF_INET;
	k->client.pad = 0;
	k->pad = 0;
}
