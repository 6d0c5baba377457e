// SPDX-License-Identifier: GPL-2.0
/*
 * global_ma_prefill_*: allocations from the global allocator on the CPU
 * that triggers them, to check the reserve that a map of type
 * BPF_MAP_TYPE_GLOBAL_MA_RESERVE gives every CPU (Delyan's "freelist determinism" sequence).
 *
 * The runner pins a thread to CPU c, writes ctl[c] (command, base slot,
 * count) and calls getpgid() once:
 *
 *   GMA_PF_ALLOC   n allocations, each kept in objs[c * GMA_PF_SLOTS +
 *                  base + i] (whatever was there is released)
 *   GMA_PF_FREE    the objects of those n slots taken out and released
 *   GMA_PF_HAMMER  n (at most 64) allocations, each released at once,
 *                  on every call (threads of the concurrent test)
 *
 * All objects are allocated and freed on c: the reserve is per CPU, and
 * an object freed on another CPU goes to that CPU's free list.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include "rig.h"
#include "global_ma.h"

/* Mirrored in src/tests/global_ma/prefill/mod.rs. */
#define GMA_PF_SLOTS 1024
#define GMA_PF_HAMMER_MAX 64

enum {
	GMA_PF_NONE,
	GMA_PF_ALLOC,
	GMA_PF_FREE,
	GMA_PF_HAMMER,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RIG_MAX_CPUS * GMA_PF_SLOTS);
	__type(key, __u32);
	__type(value, struct gma_val);
} objs SEC(".maps");

/* One per CPU, written by user space before the trigger and by the
 * program on that CPU only. Mirrored by `PfCtl` in Rust.
 */
struct gma_pf_ctl {
	__u32 cmd;
	__u32 tgid;
	__u32 base;		/* first slot */
	__u32 n;		/* slots / iterations */
	__u64 runs;		/* program runs that served this command */
	__u64 done;		/* successful allocations or frees */
	__u64 fails;		/* bpf_ma_testobj_new() returned NULL */
	__u64 empty;		/* GMA_PF_FREE found an empty slot */
	__u64 old_found;	/* GMA_PF_ALLOC found an object in its slot */
	__u64 wrong_cpu;	/* object allocated on another CPU */
	__u64 bad_magic;	/* object without the magic */
	__u64 no_elem;		/* array lookup failed */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RIG_MAX_CPUS);
	__type(key, __u32);
	__type(value, struct gma_pf_ctl);
} ctl SEC(".maps");

static __always_inline struct gma_pf_ctl *serving(__u32 cmd, __u32 *cpu)
{
	struct gma_pf_ctl *c;

	*cpu = bpf_get_smp_processor_id();
	c = bpf_map_lookup_elem(&ctl, cpu);
	if (!c || c->cmd != cmd || !c->tgid ||
	    c->tgid != (__u32)(bpf_get_current_pid_tgid() >> 32))
		return NULL;
	c->runs++;
	return c;
}

/* The loops run with bpf_loop(): the verifier checks a callback once,
 * where a bounded loop of GMA_PF_SLOTS iterations is checked iteration by
 * iteration (about a second of the object's load under TCG).
 */
struct pf_loop {
	struct gma_pf_ctl *c;
	__u32 cpu;
};

/* Iteration i of GMA_PF_ALLOC: slot base + i (1 ends the loop) */
static long pf_alloc_one(__u32 i, void *data)
{
	struct pf_loop *l = data;
	struct gma_pf_ctl *c = l->c;
	struct bpf_ma_testobj *obj, *old;
	struct gma_val *v;
	__u32 key;

	if (i >= c->n || c->base + i >= GMA_PF_SLOTS)
		return 1;
	key = l->cpu * GMA_PF_SLOTS + c->base + i;
	v = bpf_map_lookup_elem(&objs, &key);
	if (!v) {
		c->no_elem++;
		return 1;
	}
	obj = bpf_ma_testobj_new(NULL);
	if (!obj) {
		c->fails++;
		return 0;
	}
	if (obj->cpu != l->cpu)
		c->wrong_cpu++;
	if (obj->magic != GMA_MAGIC)
		c->bad_magic++;
	old = bpf_kptr_xchg(&v->obj, obj);
	if (old) {
		c->old_found++;
		bpf_ma_testobj_release(old, NULL);
	}
	c->done++;
	return 0;
}

/* Iteration i of GMA_PF_FREE: slot base + i (1 ends the loop) */
static long pf_free_one(__u32 i, void *data)
{
	struct pf_loop *l = data;
	struct gma_pf_ctl *c = l->c;
	struct bpf_ma_testobj *obj;
	struct gma_val *v;
	__u32 key;

	if (i >= c->n || c->base + i >= GMA_PF_SLOTS)
		return 1;
	key = l->cpu * GMA_PF_SLOTS + c->base + i;
	v = bpf_map_lookup_elem(&objs, &key);
	if (!v) {
		c->no_elem++;
		return 1;
	}
	obj = bpf_kptr_xchg(&v->obj, NULL);
	if (!obj) {
		c->empty++;
		return 0;
	}
	if (obj->magic != GMA_MAGIC)
		c->bad_magic++;
	bpf_ma_testobj_release(obj, NULL);
	c->done++;
	return 0;
}

/* Iteration i of GMA_PF_HAMMER (1 ends the loop) */
static long pf_hammer_one(__u32 i, void *data)
{
	struct pf_loop *l = data;
	struct gma_pf_ctl *c = l->c;
	struct bpf_ma_testobj *obj;

	if (i >= c->n)
		return 1;
	obj = bpf_ma_testobj_new(NULL);
	if (!obj) {
		c->fails++;
		return 0;
	}
	bpf_ma_testobj_release(obj, NULL);
	c->done++;
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int gma_pf_alloc(void *ctx)
{
	struct pf_loop l = {};
	struct gma_pf_ctl *c;
	__u32 cpu;

	c = serving(GMA_PF_ALLOC, &cpu);
	if (!c)
		return 0;
	l.c = c;
	l.cpu = cpu;
	bpf_loop(GMA_PF_SLOTS, pf_alloc_one, &l, 0);
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int gma_pf_free(void *ctx)
{
	struct pf_loop l = {};
	struct gma_pf_ctl *c;
	__u32 cpu;

	c = serving(GMA_PF_FREE, &cpu);
	if (!c)
		return 0;
	l.c = c;
	l.cpu = cpu;
	bpf_loop(GMA_PF_SLOTS, pf_free_one, &l, 0);
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int gma_pf_hammer(void *ctx)
{
	struct pf_loop l = {};
	struct gma_pf_ctl *c;
	__u32 cpu;

	c = serving(GMA_PF_HAMMER, &cpu);
	if (!c)
		return 0;
	l.c = c;
	l.cpu = cpu;
	bpf_loop(GMA_PF_HAMMER_MAX, pf_hammer_one, &l, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
