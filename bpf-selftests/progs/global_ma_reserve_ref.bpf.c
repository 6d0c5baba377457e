// SPDX-License-Identifier: GPL-2.0
/*
 * global_ma_reserve_in_programs: this object must load. Its map is a
 * reservation (GMA_RESERVE_MAP in global_ma.h), and its sleepable program
 * (every "syscall" program is) refers to the map without passing it to a
 * helper: a ld_imm64 of the map, which puts it in the program's used_maps.
 * Sleepable programs may use only the map types the verifier lists (patch
 * 0011 adds this one).
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include "global_ma.h"

GMA_RESERVE_MAP(reserve);

SEC("syscall")
int gma_reserve_ref(void *ctx)
{
	asm volatile("" : : "r"(&reserve));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
