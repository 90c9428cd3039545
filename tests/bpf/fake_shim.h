/* Fakes for the helper shim of ebpf/bpf/lib/capture.h, so the capture decision runs in
 * a plain test binary. fake_shim.c is compiled as C (like the BPF object); the C++ test
 * calls the cvt_* wrappers. */
#pragma once

#include "ebpf/bpf/lib/capture_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CVT_MAX_CAPTURED 8

struct cvt_env {
	/* What the fake helpers answer. */
	int enrolled;
	struct cv_enrolled_value enrolled_value;
	int own_socket;
	int listener_live;
	__u64 netns_cookie;
	/* Captured entries; value[i] is entry i's tenant scope (all zero: only unrestricted
	 * tenants may use it). */
	struct cv_captured_key captured[CVT_MAX_CAPTURED];
	struct cv_captured_value captured_value[CVT_MAX_CAPTURED];
	int n_captured;
	struct cv_captured6_key captured6[CVT_MAX_CAPTURED];
	struct cv_captured_value captured6_value[CVT_MAX_CAPTURED];
	int n_captured6;
	struct cv_prefix_key captured_prefixes[CVT_MAX_CAPTURED];
	struct cv_captured_value captured_prefix_value[CVT_MAX_CAPTURED];
	int n_captured_prefixes;
	/* cv_tenant_scope: restricted tenants and their slots. */
	__u32 scoped_tenant[CVT_MAX_CAPTURED];
	__u32 scoped_slot[CVT_MAX_CAPTURED];
	int n_scoped;
	struct cv_port_key excluded_ports[CVT_MAX_CAPTURED];
	int n_excluded_ports;
	/* CIDRs as full trie keys (prefixlen includes CV_CIDR_KEY_FIXED_BITS). */
	struct cv_cidr_key excluded_cidrs[CVT_MAX_CAPTURED];
	int n_excluded_cidrs;
	__u8 listener_family; /* the family the last listener check asked for */
	/* How often each was asked (lazy gathering is part of the contract). */
	int calls_enrolled;
	int calls_own_socket;
	int calls_captured;
	int calls_listener;
	int calls_excluded;
	int calls_scope;
};

struct cv_decision cvt_decide(const struct cv_connect_facts *f);
struct cv_decision cvt_decide_record_failed(const struct cv_connect_facts *f);
struct cv_decision cvt_connect4_evaluate(struct cvt_env *env, struct cv_connect_facts *f, __u32 ip4_net,
					 __u16 port_net);
struct cv_decision cvt_connect6_evaluate(struct cvt_env *env, struct cv_connect_facts *f, const __u32 *ip6_net,
					 __u16 port_net);
void cvt_dst_from6(struct cv_dst *d, const __u32 *ip6_net, __u16 port_net);
void cvt_make_orig_dst_key6(struct cv_orig_dst_key *k, __u64 netns_cookie, const __u32 *local_ip6_net,
			    __u32 local_port_host);
__u64 *cvt_counter_for(struct cv_counters *c, struct cv_decision d);
void cvt_make_pending4(struct cv_pending_dst *p, __u64 netns_cookie, __u32 ip4_net, __u16 port_net);
void cvt_make_orig_dst_key4(struct cv_orig_dst_key *k, __u64 netns_cookie, __u32 local_ip4_net,
			    __u32 local_port_host);
int cvt_is_loopback4(__u32 ip4_net);

#ifdef __cplusplus
}
#endif
