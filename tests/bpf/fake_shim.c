/* The fake helper shim: capture.h compiled as plain C, as in the BPF object. */
#include "tests/bpf/fake_shim.h"
#include "ebpf/bpf/lib/capture.h"

#include <string.h>

CV_INLINE int cv_shim_lookup_enrolled(void *env, struct cv_enrolled_value *out)
{
	struct cvt_env *e = env;

	e->calls_enrolled++;
	if (!e->enrolled)
		return 0;
	*out = e->enrolled_value;
	return 1;
}

CV_INLINE int cv_shim_own_socket(void *env)
{
	struct cvt_env *e = env;

	e->calls_own_socket++;
	return e->own_socket;
}

CV_INLINE int cv_shim_captured_lookup(void *env, const struct cv_captured_key *key)
{
	struct cvt_env *e = env;
	int i;

	e->calls_captured++;
	for (i = 0; i < e->n_captured; i++) {
		/* Byte comparison, as the kernel's hash map does: padding must be zero. */
		if (memcmp(&e->captured[i], key, sizeof(*key)) == 0)
			return 1;
	}
	return 0;
}

CV_INLINE int cv_shim_listener_live(void *env)
{
	struct cvt_env *e = env;

	e->calls_listener++;
	return e->listener_live;
}

struct cv_decision cvt_decide(const struct cv_connect_facts *f)
{
	return cv_decide(f);
}

struct cv_decision cvt_decide_record_failed(const struct cv_connect_facts *f)
{
	return cv_decide_record_failed(f);
}

struct cv_decision cvt_connect4_evaluate(struct cvt_env *env, struct cv_connect_facts *f, __u32 ip4_net,
					 __u16 port_net)
{
	return cv_connect4_evaluate(env, f, ip4_net, port_net);
}

__u64 *cvt_counter_for(struct cv_counters *c, struct cv_decision d)
{
	return cv_counter_for(c, d);
}

void cvt_make_pending4(struct cv_pending_dst *p, __u64 netns_cookie, __u32 ip4_net, __u16 port_net)
{
	cv_make_pending4(p, netns_cookie, ip4_net, port_net);
}

void cvt_make_orig_dst_key4(struct cv_orig_dst_key *k, __u64 netns_cookie, __u32 local_ip4_net,
			    __u32 local_port_host)
{
	cv_make_orig_dst_key4(k, netns_cookie, local_ip4_net, local_port_host);
}

int cvt_is_loopback4(__u32 ip4_net)
{
	return cv_is_loopback4(ip4_net);
}
