// SPDX-License-Identifier: GPL-2.0
/*
 * global_ma_reserve_in_programs: this object must NOT load. Its map is a
 * reservation (BPF_MAP_TYPE_GLOBAL_MA_RESERVE, 32 in the series' enum
 * bpf_map_type, written as a number so that the object builds on any
 * tree), which libbpf creates like any map, and its program passes the map
 * to bpf_map_lookup_elem(). The map has no elements and no key; the
 * verifier must refuse the call, or the program would get the ERR_PTR of
 * the map's lookup as a value pointer.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>

struct {
	__uint(type, 32);
	__uint(value_size, 32);
	__uint(max_entries, 1);
} reserve SEC(".maps");

SEC("syscall")
int gma_reserve_lookup(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&reserve, &key);

	return v ? *v : 0;
}

char LICENSE[] SEC("license") = "GPL";
