// SPDX-License-Identifier: GPL-2.0
/*
 * global_ma_reserve_in_programs: this object must NOT load. Its map is a
 * reservation (GMA_RESERVE_MAP in global_ma.h), which libbpf creates like
 * any map, and its program passes the map to bpf_map_lookup_elem(). The
 * map has no elements and no key; the verifier must refuse the call, or
 * the program would get the ERR_PTR of the map's lookup as a value pointer.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include "global_ma.h"

GMA_RESERVE_MAP(reserve);

SEC("syscall")
int gma_reserve_lookup(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&reserve, &key);

	return v ? *v : 0;
}

char LICENSE[] SEC("license") = "GPL";
