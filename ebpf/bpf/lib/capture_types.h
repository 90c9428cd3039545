/* Data of the capture decision (lib/capture.h), apart from its logic so that C++ test
 * code can use the types without the shim declarations. */
#pragma once

#include "ebpf/include/culvert_bpf.h"

#define CV_INLINE static inline __attribute__((always_inline))

enum cv_verdict {
	CV_PASS = 0,     /* connect() untouched */
	CV_REDIRECT = 1, /* rewrite to the in-pod listener, record the original dst */
	CV_REFUSE = 2,   /* connect() fails with ECONNREFUSED */
	CV_NEED = 3,     /* not decided: gather decision.need first */
};

enum cv_reason {
	CV_R_NONE = 0,
	CV_R_NOT_TCP,
	CV_R_NOT_ENROLLED,
	CV_R_OWN_SOCKET,
	CV_R_NOT_CAPTURED,
	CV_R_LISTENER_LIVE,   /* -> REDIRECT */
	CV_R_LISTENER_DOWN,   /* -> fail mode */
	CV_R_RECORD_FAILED,   /* REDIRECT decided but the original dst could not be stored */
	CV_R_BYPASS,          /* global bypass (`culvertctl capture off`) */
	CV_R_EXCLUDED,        /* excluded port or CIDR, or the pod's own address */
	CV_R_OUT_OF_SCOPE,    /* captured destination the pod's tenant may not use */
};

/* Facts about one connect(), as bits of cv_connect_facts.known / .value. */
enum cv_fact {
	CV_FACT_ENROLLED = 1u << 0,
	CV_FACT_OWN_SOCKET = 1u << 1,
	CV_FACT_CAPTURED = 1u << 2,
	CV_FACT_LISTENER_LIVE = 1u << 3,
	CV_FACT_EXCLUDED = 1u << 4,
	CV_FACT_IN_SCOPE = 1u << 5, /* the matched captured entry allows the pod's tenant */
};
#define CV_FACT_COUNT 6

struct cv_connect_facts {
	__u32 known;     /* cv_fact bits gathered so far */
	__u32 value;     /* cv_fact bits that are true (meaningful where known) */
	__u8 is_tcp;     /* SOCK_STREAM + IPPROTO_TCP: always known up front */
	__u8 fail_mode;  /* enum cv_fail_mode, from cv_enrolled (valid when enrolled) */
	__u8 bypass;     /* cv_config.bypass: always known up front */
	__u8 pad;
	__u32 tenant_id; /* from cv_enrolled (valid when enrolled) */
	__u64 netns_cookie; /* the caller's netns (set when ENROLLED was gathered) */
};

/* The destination of one connect(), family-tagged. An IPv4-mapped IPv6 destination is
 * given as IPv4 (family CV_AF_INET): that is what it reaches. */
struct cv_dst {
	__u32 addr[4]; /* network order; IPv4 in addr[0] */
	__u16 port;    /* network order */
	__u8 family;   /* CV_AF_INET / CV_AF_INET6 */
	__u8 pad;
};

struct cv_decision {
	__u8 verdict; /* enum cv_verdict */
	__u8 reason;  /* enum cv_reason */
	__u16 need;   /* the cv_fact wanted when verdict == CV_NEED */
};
