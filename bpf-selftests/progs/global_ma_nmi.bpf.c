// SPDX-License-Identifier: GPL-2.0
/*
 * global_ma_nmi_*: test objects allocated and freed in NMI.
 *
 * The kernel's NMI source (CONFIG_BPF_GLOBAL_MA_TEST_NMI, patches/global-ma
 * 0014) calls bpf_ma_test_nmi_hook() in every NMI it sends; nmi_hook below
 * runs there, checks that it really is in NMI (the NMI bits of the CPU's
 * preempt count) and does what ctl.op says:
 *
 *   NMI_OP_HOLD        allocate ctl.per_nmi objects and store each in the
 *                      next free slot of this CPU in `held`, up to
 *                      ctl.slots; a failed allocation is counted, not
 *                      retried
 *   NMI_OP_RING        the same, but the slots are a ring: the object
 *                      found in a slot is released first (a free in NMI)
 *   NMI_OP_HASH_STASH  allocate one object and xchg it into `hash`
 *                      element ctl.key
 *   NMI_OP_HASH_TAKE   xchg the object out of element ctl.key, release it
 *   NMI_OP_HASH_DELETE delete element ctl.key: the map frees its object
 *   NMI_OP_CROSS_UPDATE update the element of `plain` of the other CPU:
 *                      ctl.cross_key[1] on CPU ctl.key, ctl.cross_key[0]
 *                      elsewhere; -EBUSY (the bucket held by another CPU)
 *                      is counted in `busy`, -ENOMEM (no element for the
 *                      map) in `nulls`
 *
 * normal_op's NORMAL_OP_CROSS_UPDATE updates the running CPU's own element
 * of `plain` CROSS_LOOPS times (the one NMIs on the other CPU update),
 * counted the same way.
 *
 * normal_op (fentry on getpgid, for the runner's threads only) does the
 * same hash operations in normal context, plus NORMAL_OP_ALLOC (one
 * allocation and its release). Every outcome is counted per CPU in
 * `counts`: entry cpu for nmi_hook, NMI_MAX_CPUS + cpu for normal_op, so
 * that an NMI never updates the counters of the program it interrupted.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include <bpf_tracing.h>
#include "global_ma.h"
#include "rig.h"

/* Mirrored in src/tests/global_ma/nmi.rs. */
#define NMI_SLOTS	4096		/* slots of `held` per CPU */
#define NMI_MAX_CPUS	8		/* CPUs with slots */
#define NMI_MAX_PER_NMI	8192
#define HASH_ENTRIES	64
#define CROSS_LOOPS	256

/* preempt_count bits of NMI context (include/linux/preempt.h) */
#define NMI_MASK	0x00f00000

enum {
	NMI_OP_NONE,
	NMI_OP_HOLD,
	NMI_OP_RING,
	NMI_OP_HASH_STASH,
	NMI_OP_HASH_TAKE,
	NMI_OP_HASH_DELETE,
	NORMAL_OP_ALLOC,
	NMI_OP_CROSS_UPDATE,
	NORMAL_OP_CROSS_UPDATE,
};

struct nmi_ctl {
	__u32 tgid;		/* the runner, for normal_op */
	__u32 op;		/* for nmi_hook */
	__u32 normal_op;	/* for normal_op */
	__u32 per_nmi;
	__u32 slots;		/* usable slots per CPU, <= NMI_SLOTS */
	__u32 key;		/* element of `hash`; CROSS_UPDATE: CPU A */
	__u32 cross_key[2];	/* CROSS_UPDATE: keys of CPU A and of the other */
};

struct nmi_counts {
	__u64 nmis;		/* runs of nmi_hook */
	__u64 in_nmi;		/* of which with NMI bits in preempt_count */
	__u64 allocs;		/* successful allocations, both programs */
	__u64 nulls;		/* failed allocations, both programs */
	__u64 releases;		/* objects released with the kfunc */
	__u64 stored;		/* objects xchg'ed into a map */
	__u64 taken;		/* objects xchg'ed out of a map */
	__u64 deletes;		/* successful hash deletes */
	__u64 full;		/* HOLD found no free slot */
	__u64 errs;		/* anything else, last one in last_err */
	__s64 last_err;
	__u64 next_slot;	/* HOLD/RING position */
	__u64 normal_runs;	/* runs of normal_op */
	__u64 updates;		/* successful CROSS_UPDATE updates */
	__u64 busy;		/* CROSS_UPDATE updates that got -EBUSY */
};

struct nmi_ctl ctl;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * NMI_MAX_CPUS);
	__type(key, __u32);
	__type(value, struct nmi_counts);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NMI_MAX_CPUS * NMI_SLOTS);
	__type(key, __u32);
	__type(value, struct gma_val);
} held SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, HASH_ENTRIES);
	__type(key, __u32);
	__type(value, struct gma_val);
} hash SEC(".maps");

/* Elements are inserted by user space: updates in NMI only overwrite.
 * Zero seed: user space picks keys whose buckets have different
 * map_locked slots (jhash2 with seed 0, see nmi.rs).
 * Not preallocated: a preallocated map's update of an existing element
 * takes the CPU's one spare element (htab->extra_elems), which an NMI
 * that interrupts an update on the same CPU would take too.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_ZERO_SEED);
	__uint(max_entries, HASH_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} plain SEC(".maps");

extern const int __preempt_count __ksym;

struct fill_ctx {
	struct nmi_counts *c;
	__u32 cpu;
	bool ring;
};

static int note_err(struct nmi_counts *c, long err)
{
	c->errs++;
	c->last_err = err;
	return 1;
}

/* Allocates an object into @v, releasing the one it held. Returns false
 * when the allocation failed.
 */
static __always_inline bool stash(struct nmi_counts *c, struct gma_val *v)
{
	struct bpf_ma_testobj *obj, *old;

	obj = bpf_ma_testobj_new(NULL);
	if (!obj) {
		c->nulls++;
		return false;
	}
	c->allocs++;
	old = bpf_kptr_xchg(&v->obj, obj);
	c->stored++;
	if (old) {
		c->taken++;
		bpf_ma_testobj_release(old, NULL);
		c->releases++;
	}
	return true;
}

/* One allocation into the next slot (bpf_loop callback) */
static long fill_one(__u32 i, void *data)
{
	struct fill_ctx *f = data;
	struct nmi_counts *c = f->c;
	struct gma_val *v;
	__u32 slots = ctl.slots, slot, key;

	if (!slots || slots > NMI_SLOTS || f->cpu >= NMI_MAX_CPUS)
		return note_err(c, -22);
	slot = c->next_slot % slots;
	if (!f->ring && c->next_slot >= slots) {
		c->full++;
		return 1;
	}
	key = f->cpu * NMI_SLOTS + slot;
	v = bpf_map_lookup_elem(&held, &key);
	if (!v)
		return note_err(c, -2);
	if (stash(c, v))
		c->next_slot++;
	return 0;
}

static void hash_stash(struct nmi_counts *c)
{
	__u32 key = ctl.key;
	struct gma_val *v;

	v = bpf_map_lookup_elem(&hash, &key);
	if (!v)
		note_err(c, -2);
	else
		stash(c, v);
}

static void hash_take(struct nmi_counts *c)
{
	struct bpf_ma_testobj *old;
	__u32 key = ctl.key;
	struct gma_val *v;

	v = bpf_map_lookup_elem(&hash, &key);
	if (!v) {
		note_err(c, -2);
		return;
	}
	old = bpf_kptr_xchg(&v->obj, NULL);
	if (!old) {
		note_err(c, -61);	/* ENODATA: nothing stored */
		return;
	}
	c->taken++;
	bpf_ma_testobj_release(old, NULL);
	c->releases++;
}

static void hash_delete(struct nmi_counts *c)
{
	__u32 key = ctl.key;
	long err;

	err = bpf_map_delete_elem(&hash, &key);
	if (err)
		note_err(c, err);
	else
		c->deletes++;
}

/* The hash operations, from either program */
static void hash_op(struct nmi_counts *c, __u32 op)
{
	switch (op) {
	case NMI_OP_HASH_STASH:
		hash_stash(c);
		break;
	case NMI_OP_HASH_TAKE:
		hash_take(c);
		break;
	case NMI_OP_HASH_DELETE:
		hash_delete(c);
		break;
	}
}

/* One update of `plain`: the outcome counted in @c */
static void plain_update(struct nmi_counts *c, __u32 key, __u64 val)
{
	long err;

	/* The helper's int result arrives zero-extended */
	err = (int)bpf_map_update_elem(&plain, &key, &val, BPF_EXIST);
	if (!err)
		c->updates++;
	else if (err == -16)	/* EBUSY */
		c->busy++;
	else if (err == -12)	/* ENOMEM: the map's free list was empty */
		c->nulls++;
	else
		note_err(c, err);
}

/* In NMI: the element of the other CPU */
static void cross_update(struct nmi_counts *c, __u32 cpu)
{
	plain_update(c, ctl.cross_key[cpu == ctl.key ? 1 : 0], c->nmis);
}

/* In normal context: this CPU's own element, CROSS_LOOPS times, so that
 * this CPU holds its bucket lock much of the time
 */
static long cross_normal_one(__u32 i, void *data)
{
	struct fill_ctx *f = data;

	plain_update(f->c, ctl.cross_key[f->cpu == ctl.key ? 0 : 1], i);
	return 0;
}

static struct nmi_counts *this_cpu_counts(__u32 *cpu, bool nmi)
{
	__u32 key;

	*cpu = bpf_get_smp_processor_id();
	if (*cpu >= NMI_MAX_CPUS)
		return NULL;
	key = *cpu + (nmi ? 0 : NMI_MAX_CPUS);
	return bpf_map_lookup_elem(&counts, &key);
}

SEC("fentry/bpf_ma_test_nmi_hook")
int BPF_PROG(nmi_hook, __u32 source, __u64 seq)
{
	struct fill_ctx f = {};
	struct nmi_counts *c;
	const int *pc;
	__u32 cpu, n;

	c = this_cpu_counts(&cpu, true);
	if (!c)
		return 0;
	c->nmis++;
	pc = bpf_this_cpu_ptr(&__preempt_count);
	if (*pc & NMI_MASK)
		c->in_nmi++;

	switch (ctl.op) {
	case NMI_OP_HOLD:
	case NMI_OP_RING:
		n = ctl.per_nmi;
		if (n > NMI_MAX_PER_NMI) {
			note_err(c, -7);
			break;
		}
		f.c = c;
		f.cpu = cpu;
		f.ring = ctl.op == NMI_OP_RING;
		bpf_loop(n, fill_one, &f, 0);
		break;
	case NMI_OP_CROSS_UPDATE:
		cross_update(c, cpu);
		break;
	default:
		hash_op(c, ctl.op);
		break;
	}
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int BPF_PROG(normal_op)
{
	struct bpf_ma_testobj *obj;
	struct nmi_counts *c;
	__u32 cpu;

	if (!RIG_IS_RUNNER(ctl.tgid, bpf_get_current_pid_tgid()))
		return 0;
	c = this_cpu_counts(&cpu, false);
	if (!c)
		return 0;
	c->normal_runs++;

	switch (ctl.normal_op) {
	case NORMAL_OP_ALLOC:
		obj = bpf_ma_testobj_new(NULL);
		if (!obj) {
			c->nulls++;
			break;
		}
		c->allocs++;
		bpf_ma_testobj_release(obj, NULL);
		c->releases++;
		break;
	case NORMAL_OP_CROSS_UPDATE: {
		struct fill_ctx f = { .c = c, .cpu = cpu };

		bpf_loop(CROSS_LOOPS, cross_normal_one, &f, 0);
		break;
	}
	default:
		hash_op(c, ctl.normal_op);
		break;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
