/* The fake helper shim: capture.h compiled as plain C, as in the BPF object. */
#include "tests/bpf/fake_shim.h"
#include "ebpf/bpf/lib/capture.h"

#include <string.h>

CV_INLINE int cv_shim_lookup_enrolled(void *env, __u64 *netns_cookie, struct cv_enrolled_value *out)
{
	struct cvt_env *e = env;

	e->calls_enrolled++;
	*netns_cookie = e->netns_cookie;
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

CV_INLINE const struct cv_captured_value *cv_shim_captured_lookup(void *env, const struct cv_captured_key *key)
{
	struct cvt_env *e = env;
	int i;

	e->calls_captured++;
	for (i = 0; i < e->n_captured; i++) {
		/* Byte comparison, as the kernel's hash map does: padding must be zero. */
		if (memcmp(&e->captured[i], key, sizeof(*key)) == 0)
			return &e->captured_value[i];
	}
	return 0;
}

CV_INLINE const struct cv_captured_value *cv_shim_captured6_lookup(void *env, const struct cv_captured6_key *key)
{
	struct cvt_env *e = env;
	int i;

	e->calls_captured++;
	for (i = 0; i < e->n_captured6; i++) {
		if (memcmp(&e->captured6[i], key, sizeof(*key)) == 0)
			return &e->captured6_value[i];
	}
	return 0;
}

CV_INLINE int cv_shim_tenant_scope(void *env, __u32 tenant_id, __u32 *slot)
{
	struct cvt_env *e = env;
	int i;

	e->calls_scope++;
	for (i = 0; i < e->n_scoped; i++) {
		if (e->scoped_tenant[i] == tenant_id) {
			*slot = e->scoped_slot[i];
			return 1;
		}
	}
	return 0;
}

CV_INLINE int cv_shim_port_excluded(void *env, const struct cv_port_key *key)
{
	struct cvt_env *e = env;
	int i;

	e->calls_excluded++;
	for (i = 0; i < e->n_excluded_ports; i++) {
		if (memcmp(&e->excluded_ports[i], key, sizeof(*key)) == 0)
			return 1;
	}
	return 0;
}

/* Longest-prefix semantics of BPF_MAP_TYPE_LPM_TRIE: an entry matches when its first
 * prefixlen bits (of the data after prefixlen) equal the key's. */
static int cvt_prefix_match(const struct cv_cidr_key *entry, const struct cv_cidr_key *key)
{
	const __u8 *a = (const __u8 *)entry + sizeof(__u32);
	const __u8 *b = (const __u8 *)key + sizeof(__u32);
	__u32 bits = entry->prefixlen, i;

	if (bits > key->prefixlen)
		return 0;
	for (i = 0; i < bits / 8; i++) {
		if (a[i] != b[i])
			return 0;
	}
	if (bits % 8) {
		__u8 mask = (__u8)(0xff << (8 - bits % 8));
		if ((a[bits / 8] & mask) != (b[bits / 8] & mask))
			return 0;
	}
	return 1;
}

CV_INLINE int cv_shim_cidr_excluded(void *env, const struct cv_cidr_key *key)
{
	struct cvt_env *e = env;
	int i;

	e->calls_excluded++;
	for (i = 0; i < e->n_excluded_cidrs; i++) {
		if (cvt_prefix_match(&e->excluded_cidrs[i], key))
			return 1;
	}
	return 0;
}

/* The same for cv_prefix_key (port and family first, then the address). */
static int cvt_prefix_key_match(const struct cv_prefix_key *entry, const struct cv_prefix_key *key)
{
	const __u8 *a = (const __u8 *)entry + sizeof(__u32);
	const __u8 *b = (const __u8 *)key + sizeof(__u32);
	__u32 bits = entry->prefixlen, i;

	if (bits > key->prefixlen)
		return 0;
	for (i = 0; i < bits / 8; i++) {
		if (a[i] != b[i])
			return 0;
	}
	if (bits % 8) {
		__u8 mask = (__u8)(0xff << (8 - bits % 8));
		if ((a[bits / 8] & mask) != (b[bits / 8] & mask))
			return 0;
	}
	return 1;
}

CV_INLINE const struct cv_captured_value *cv_shim_captured_prefix(void *env, const struct cv_prefix_key *key)
{
	struct cvt_env *e = env;
	const struct cv_captured_value *best = 0;
	__u32 best_len = 0;
	int i;

	e->calls_captured++;
	for (i = 0; i < e->n_captured_prefixes; i++) {
		if (cvt_prefix_key_match(&e->captured_prefixes[i], key) &&
		    (!best || e->captured_prefixes[i].prefixlen > best_len)) {
			best = &e->captured_prefix_value[i];
			best_len = e->captured_prefixes[i].prefixlen;
		}
	}
	return best;
}

CV_INLINE int cv_shim_listener_live(void *env, __u8 family)
{
	struct cvt_env *e = env;

	e->calls_listener++;
	e->listener_family = family;
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

struct cv_decision cvt_connect6_evaluate(struct cvt_env *env, struct cv_connect_facts *f, const __u32 *ip6_net,
					 __u16 port_net)
{
	struct cv_dst d;

	cv_dst_from6(&d, ip6_net, port_net);
	return cv_connect_evaluate(env, f, &d);
}

void cvt_dst_from6(struct cv_dst *d, const __u32 *ip6_net, __u16 port_net)
{
	cv_dst_from6(d, ip6_net, port_net);
}

void cvt_make_orig_dst_key6(struct cv_orig_dst_key *k, __u64 netns_cookie, const __u32 *local_ip6_net,
			    __u32 local_port_host)
{
	cv_make_orig_dst_key6(k, netns_cookie, local_ip6_net, local_port_host);
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
