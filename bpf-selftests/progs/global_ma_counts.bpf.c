// SPDX-License-Identifier: GPL-2.0
/*
 * global_ma_prog_counts: each program's use of the global allocator is
 * counted in its own fdinfo (global_ma_allocs/frees/alloc_fails).
 *
 *   gma_alloc3       fentry, op GMA_OP_ALLOC3: allocates GMA_N3 objects
 *                    and releases them
 *   gma_alloc7       fentry, op GMA_OP_ALLOC7: allocates GMA_N7 objects
 *                    and keeps them in `stash` (keys 0..GMA_N7-1)
 *   gma_sys_take7    syscall: takes the GMA_N7 objects out of `stash` and
 *                    releases them (frees it did not allocate)
 *   gma_sys_alloc5   syscall: allocates GMA_N5 objects and releases them
 *   gma_plain        fentry, op GMA_OP_PLAIN: calls no kfunc, so it has no
 *                    global_ma counters at all
 *
 * The runner triggers the fentry programs with getpgid() and runs the
 * syscall programs with BPF_PROG_TEST_RUN, always from the same CPU.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include "global_ma.h"

/* Mirrored in src/tests/global_ma/counts.rs. */
#define GMA_N3 3
#define GMA_N5 5
#define GMA_N7 7

enum {
	GMA_OP_NONE,
	GMA_OP_ALLOC3,
	GMA_OP_ALLOC7,
	GMA_OP_PLAIN,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GMA_N7);
	__type(key, __u32);
	__type(value, struct gma_val);
} stash SEC(".maps");

/* The object's .bss, mirrored by `CountsCtl` in Rust. */
struct gma_counts_ctl {
	__u32 tgid;		/* in: the runner's tgid */
	__u32 op;		/* in: GMA_OP_* for the fentry programs */
	__u64 alloc7_id;	/* in: gma_alloc7's program id */
	__u64 runs[4];		/* out: runs per op, [0] = gma_sys_* runs */
	__u64 nulls;		/* bpf_ma_testobj_new() returned NULL */
	__u64 old_found;	/* gma_alloc7 found an object already there */
	__u64 taken;		/* gma_sys_take7 found an object */
	__u64 foreign;		/* ... whose prog_id was not gma_alloc7's */
	__u64 bad_magic;	/* an object without the magic */
	__u64 no_elem;		/* array lookup failed */
};

struct gma_counts_ctl ctl;

static __always_inline int serving(__u32 op)
{
	if (!ctl.tgid || (__u32)(bpf_get_current_pid_tgid() >> 32) != ctl.tgid ||
	    ctl.op != op)
		return 0;
	ctl.runs[op & 3]++;
	return 1;
}

static __always_inline void alloc_release(int n)
{
	struct bpf_ma_testobj *obj;
	int i;

	for (i = 0; i < n; i++) {
		obj = bpf_ma_testobj_new(NULL);
		if (!obj) {
			ctl.nulls++;
			continue;
		}
		if (obj->magic != GMA_MAGIC)
			ctl.bad_magic++;
		bpf_ma_testobj_release(obj, NULL);
	}
}

SEC("fentry/__x64_sys_getpgid")
int gma_alloc3(void *ctx)
{
	if (serving(GMA_OP_ALLOC3))
		alloc_release(GMA_N3);
	return 0;
}

/* Array slot i: a new object in, whatever was there released. */
static __always_inline void put_one(__u32 i)
{
	struct bpf_ma_testobj *obj, *old;
	struct gma_val *v;

	v = bpf_map_lookup_elem(&stash, &i);
	if (!v) {
		ctl.no_elem++;
		return;
	}
	obj = bpf_ma_testobj_new(NULL);
	if (!obj) {
		ctl.nulls++;
		return;
	}
	old = bpf_kptr_xchg(&v->obj, obj);
	if (old) {
		ctl.old_found++;
		bpf_ma_testobj_release(old, NULL);
	}
}

/* Array slot i: the object out and released. */
static __always_inline void take_one(__u32 i)
{
	struct bpf_ma_testobj *obj;
	struct gma_val *v;

	v = bpf_map_lookup_elem(&stash, &i);
	if (!v) {
		ctl.no_elem++;
		return;
	}
	obj = bpf_kptr_xchg(&v->obj, NULL);
	if (!obj)
		return;
	ctl.taken++;
	if (obj->prog_id != ctl.alloc7_id)
		ctl.foreign++;
	if (obj->magic != GMA_MAGIC)
		ctl.bad_magic++;
	bpf_ma_testobj_release(obj, NULL);
}

/* Spelled out: a loop whose map key lives on the stack can look infinite
 * to the 6.1 verifier on the lookup-failed path.
 */
#define FOR_EACH_SLOT(fn)						\
	do {								\
		fn(0); fn(1); fn(2); fn(3); fn(4); fn(5); fn(6);	\
	} while (0)
_Static_assert(GMA_N7 == 7, "FOR_EACH_SLOT covers GMA_N7 slots");

SEC("fentry/__x64_sys_getpgid")
int gma_alloc7(void *ctx)
{
	if (serving(GMA_OP_ALLOC7))
		FOR_EACH_SLOT(put_one);
	return 0;
}

SEC("syscall")
int gma_sys_take7(void *ctx)
{
	ctl.runs[0]++;
	FOR_EACH_SLOT(take_one);
	return 0;
}

SEC("syscall")
int gma_sys_alloc5(void *ctx)
{
	ctl.runs[0]++;
	alloc_release(GMA_N5);
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int gma_plain(void *ctx)
{
	serving(GMA_OP_PLAIN);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
