// SPDX-License-Identifier: GPL-2.0
/*
 * global_ma_prog_arg_refused: this object must NOT load. Its program passes
 * a pointer (its context) as the hidden aux__prog argument of
 * bpf_ma_testobj_new(), which the verifier fills in itself (patch 0005);
 * a pointer there, possibly a referenced one, would look consumed, so the
 * verifier refuses it with "arg#0 is set by the kernel, pass NULL".
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include "global_ma.h"

SEC("syscall")
int gma_bad_prog_arg(void *ctx)
{
	struct bpf_ma_testobj *obj = bpf_ma_testobj_new(ctx);

	if (obj)
		bpf_ma_testobj_release(obj, NULL);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
