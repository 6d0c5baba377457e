// SPDX-License-Identifier: GPL-2.0
/*
 * hash_no_prealloc_all_cpus: a BPF_F_NO_PREALLOC hash map updated and
 * deleted from a tracing program running on every vCPU.
 *
 * The runner pins one thread per online CPU, registers each thread's tid in
 * `threads` together with the CPU it is pinned to, and makes every thread call
 * getpgid() HASH_TRIGGERS times. For each call the program
 *   - counts the hit for the CPU it runs on (state.hits[cpu]) and for the
 *     thread (slot->hits), and notes when that CPU is not the pinned one,
 *   - inserts key rig_key(cpu, seq) with value key ^ HASH_VALUE_MAGIC,
 *   - on odd seq deletes the previous key rig_key(cpu, seq - 1),
 * so afterwards exactly the odd-seq keys of every CPU remain.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include "rig.h"

/* Mirrored in src/tests/hash_no_prealloc.rs. */
#define HASH_MAX_ENTRIES 8192
#define HASH_VALUE_MAGIC 0x5a5a0000a5a5ULL

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, HASH_MAX_ENTRIES);
	__type(key, __u64);
	__type(value, __u64);
} stress SEC(".maps");

/* Written by the one thread it belongs to, so plain increments suffice. */
struct thread_slot {
	__u32 expected_cpu;
	__u32 seq;
	__u64 hits;
	__u64 wrong_cpu;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * RIG_MAX_CPUS);
	__type(key, __u32); /* tid */
	__type(value, struct thread_slot);
} threads SEC(".maps");

/* The object's .bss: one struct, layout mirrored by HashState in Rust. */
struct hash_state {
	__u32 tgid;          /* in: the runner's tgid */
	__u32 _pad;
	__u64 hits[RIG_MAX_CPUS];
	__u64 stray;         /* runner thread without a slot in `threads` */
	__u64 cpu_oob;       /* cpu id >= RIG_MAX_CPUS */
	__u64 update_err;
	__u64 delete_err;
	__s64 last_update_err;
	__s64 last_delete_err;
};

struct hash_state state;

SEC("fentry/__x64_sys_getpgid")
int on_getpgid(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	__u32 cpu, seq;
	struct thread_slot *slot;
	__u64 key, val;
	long err;

	if (!RIG_IS_RUNNER(state.tgid, id))
		return 0;

	slot = bpf_map_lookup_elem(&threads, &tid);
	if (!slot) {
		__sync_fetch_and_add(&state.stray, 1);
		return 0;
	}

	cpu = bpf_get_smp_processor_id();
	if (cpu >= RIG_MAX_CPUS) {
		__sync_fetch_and_add(&state.cpu_oob, 1);
		return 0;
	}
	__sync_fetch_and_add(&state.hits[cpu], 1);
	slot->hits++;
	if (cpu != slot->expected_cpu)
		slot->wrong_cpu++;

	seq = slot->seq++;
	key = rig_key(cpu, seq);
	val = key ^ HASH_VALUE_MAGIC;
	err = bpf_map_update_elem(&stress, &key, &val, BPF_NOEXIST);
	if (err) {
		__sync_fetch_and_add(&state.update_err, 1);
		state.last_update_err = err;
	}

	if (seq & 1) {
		key = rig_key(cpu, seq - 1);
		err = bpf_map_delete_elem(&stress, &key);
		if (err) {
			__sync_fetch_and_add(&state.delete_err, 1);
			state.last_delete_err = err;
		}
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
