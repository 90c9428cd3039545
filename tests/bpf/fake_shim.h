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
	struct cv_captured_key captured[CVT_MAX_CAPTURED];
	int n_captured;
	/* How often each was asked (lazy gathering is part of the contract). */
	int calls_enrolled;
	int calls_own_socket;
	int calls_captured;
	int calls_listener;
};

struct cv_decision cvt_decide(const struct cv_connect_facts *f);
struct cv_decision cvt_decide_record_failed(const struct cv_connect_facts *f);
struct cv_decision cvt_connect4_evaluate(struct cvt_env *env, struct cv_connect_facts *f, __u32 ip4_net,
					 __u16 port_net);
__u64 *cvt_counter_for(struct cv_counters *c, struct cv_decision d);
void cvt_make_pending4(struct cv_pending_dst *p, __u64 netns_cookie, __u32 ip4_net, __u16 port_net);
void cvt_make_orig_dst_key4(struct cv_orig_dst_key *k, __u64 netns_cookie, __u32 local_ip4_net,
			    __u32 local_port_host);
int cvt_is_loopback4(__u32 ip4_net);

#ifdef __cplusplus
}
#endif
