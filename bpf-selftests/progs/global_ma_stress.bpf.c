// SPDX-License-Identifier: GPL-2.0
/*
 * global_ma_concurrent: every vCPU allocates, stores, takes, deletes and
 * overwrites test objects in one BPF_F_NO_PREALLOC hash map at once.
 *
 * The runner pins one thread per online CPU, registers each thread's tid in
 * `threads` with that CPU and a peer CPU, and makes them call getpgid() in a
 * loop for a few seconds. Call number `seq` of the thread on CPU c works on
 * slot = seq % GMA_SLOTS, in pass (seq / GMA_SLOTS) % 4:
 *
 *   0  own key (c, slot): insert if missing, allocate, xchg in (release
 *      whatever was there)
 *   1  peer key (peer, slot): xchg out whatever is there and release it
 *      (an object allocated, most likely, on the peer CPU)
 *   2  as 0
 *   3  own key: even slot: delete the element (the map frees the object);
 *      odd slot: overwrite it with an empty value (BPF_EXIST; the map frees
 *      the object)
 *
 * Only the owner CPU inserts, deletes, overwrites or xchg's objects into its
 * keys; the peer only xchg's objects out, so every object has exactly one
 * owner at any time however the CPUs interleave. Counters per CPU
 * (`cpu_counts`) are written by that CPU's thread only.
 *
 * Afterwards the runner triggers the census from its unregistered main
 * thread: bpf_for_each_map_elem() counts elements and the objects they hold.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include "rig.h"
#include "global_ma.h"

/* Mirrored in src/tests/global_ma/stress.rs. */
#define GMA_SLOTS 32
#define GMA_STRESS_MAX_ENTRIES (RIG_MAX_CPUS * GMA_SLOTS)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, GMA_STRESS_MAX_ENTRIES);
	__type(key, __u64);
	__type(value, struct gma_val);
} objs SEC(".maps");

/* Written by the one thread it belongs to, so plain increments suffice. */
struct gma_thread_slot {
	__u32 cpu;		/* in: the CPU the thread is pinned to */
	__u32 peer;		/* in: the CPU whose keys pass 1 takes from */
	__u64 seq;
	__u64 wrong_cpu;	/* runs on another CPU than `cpu` */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * RIG_MAX_CPUS);
	__type(key, __u32); /* tid */
	__type(value, struct gma_thread_slot);
} threads SEC(".maps");

/* Per CPU, written only by the thread pinned there. */
struct gma_cpu_counts {
	__u64 runs;
	__u64 allocs;		/* bpf_ma_testobj_new() returned an object */
	__u64 nulls;		/* ... returned NULL */
	__u64 releases;		/* bpf_ma_testobj_release() calls */
	__u64 peer_takes;	/* objects taken from the peer's keys */
	__u64 old_found;	/* own xchg-in gave back an object */
	__u64 deletes;		/* successful bpf_map_delete_elem() */
	__u64 overwrites;	/* successful BPF_EXIST updates */
	__u64 nomem;		/* insert failed with -ENOMEM (map's own allocator) */
	__u64 missing;		/* pass 3 found no element (-ENOENT) */
	__u64 errs;		/* any other failed map operation */
	__s64 last_err;
};

/* Indexed by CPU id (a map lookup bounds the index for the verifier). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RIG_MAX_CPUS);
	__type(key, __u32);
	__type(value, struct gma_cpu_counts);
} cpu_counts SEC(".maps");

/* The object's .bss, mirrored by `StressState` in Rust. */
struct gma_stress_state {
	__u32 tgid;		/* in: the runner's tgid */
	__u32 census;		/* in: unregistered runner threads take a census */
	__u64 stray;		/* runner thread without a slot, census off */
	__u64 cpu_oob;		/* CPU id >= RIG_MAX_CPUS */
	__u64 census_runs;
	__u64 census_elems;
	__u64 census_objs;
	__u64 census_bad_magic;
};

struct gma_stress_state state;

static __always_inline void map_err(struct gma_cpu_counts *c, long err)
{
	c->errs++;
	c->last_err = err;
}

/* Allocate an object into the own element `key`, inserting it if needed. */
static __always_inline void fill(struct gma_cpu_counts *c, __u64 key)
{
	struct bpf_ma_testobj *obj, *old;
	struct gma_val zero = {}, *v;
	long err;

	v = bpf_map_lookup_elem(&objs, &key);
	if (!v) {
		err = bpf_map_update_elem(&objs, &key, &zero, BPF_NOEXIST);
		if (err == -ENOMEM) {
			c->nomem++;
			return;
		}
		if (err) {
			map_err(c, err);
			return;
		}
		v = bpf_map_lookup_elem(&objs, &key);
		if (!v) {
			map_err(c, -ENOENT);
			return;
		}
	}
	obj = bpf_ma_testobj_new(NULL);
	if (!obj) {
		c->nulls++;
		return;
	}
	c->allocs++;
	old = bpf_kptr_xchg(&v->obj, obj);
	if (old) {
		c->old_found++;
		c->releases++;
		bpf_ma_testobj_release(old, NULL);
	}
}

static __always_inline void take_peer(struct gma_cpu_counts *c, __u64 key)
{
	struct bpf_ma_testobj *obj;
	struct gma_val *v;

	v = bpf_map_lookup_elem(&objs, &key);
	if (!v)
		return;
	obj = bpf_kptr_xchg(&v->obj, NULL);
	if (!obj)
		return;
	c->peer_takes++;
	c->releases++;
	bpf_ma_testobj_release(obj, NULL);
}

static __always_inline void drop(struct gma_cpu_counts *c, __u64 key, __u32 slot)
{
	struct gma_val zero = {};
	long err;

	if (slot & 1) {
		err = bpf_map_update_elem(&objs, &key, &zero, BPF_EXIST);
		if (!err)
			c->overwrites++;
	} else {
		err = bpf_map_delete_elem(&objs, &key);
		if (!err)
			c->deletes++;
	}
	/* Passes 0 and 2 may have found the map's allocator empty */
	if (err == -ENOENT)
		c->missing++;
	else if (err)
		map_err(c, err);
}

static long census_cb(struct bpf_map *map, __u64 *key, struct gma_val *v,
		      void *ctx)
{
	struct bpf_ma_testobj *obj;

	state.census_elems++;
	obj = v->obj;	/* PTR_TO_BTF_ID | PTR_UNTRUSTED: probe reads */
	if (obj) {
		state.census_objs++;
		if (obj->magic != GMA_MAGIC)
			state.census_bad_magic++;
	}
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int gma_stress(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct gma_thread_slot *slot;
	struct gma_cpu_counts *c;
	__u32 tid = (__u32)id;
	__u32 cpu, s, pass;
	__u64 seq;

	if (!RIG_IS_RUNNER(state.tgid, id))
		return 0;

	slot = bpf_map_lookup_elem(&threads, &tid);
	if (!slot) {
		if (state.census) {
			state.census_runs++;
			bpf_for_each_map_elem(&objs, census_cb, NULL, 0);
		} else {
			__sync_fetch_and_add(&state.stray, 1);
		}
		return 0;
	}

	cpu = bpf_get_smp_processor_id();
	c = bpf_map_lookup_elem(&cpu_counts, &cpu);
	if (!c) {
		__sync_fetch_and_add(&state.cpu_oob, 1);
		return 0;
	}
	if (cpu != slot->cpu)
		slot->wrong_cpu++;
	c->runs++;

	seq = slot->seq++;
	s = seq % GMA_SLOTS;
	pass = (seq / GMA_SLOTS) % 4;
	switch (pass) {
	case 0:
	case 2:
		fill(c, rig_key(cpu, s));
		break;
	case 1:
		take_peer(c, rig_key(slot->peer, s));
		break;
	default:
		drop(c, rig_key(cpu, s), s);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
