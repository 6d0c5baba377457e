// SPDX-License-Identifier: GPL-2.0
/*
 * bench_maploop (rig.bench=maploop): 6.1's own per-map allocator as a
 * BPF_F_NO_PREALLOC hash map uses it, timed on the unpatched baseline and
 * on the series kernel alike. It uses nothing the series adds, so it
 * compiles against either kernel's vmlinux.h.
 *
 * The runner pins its thread to one CPU and runs maploop_run with
 * BPF_PROG_RUN (a raw_tracepoint test run: on the calling CPU, preemption
 * off, under rcu_read_lock(), as a tracing program runs). The context's
 * args[0] is the number of pairs, args[1] the first key. Each pair inserts
 * a key the map has never held in this run (BPF_NOEXIST) and deletes it, so
 * every pair is one element allocation and one free through the map's
 * bpf_mem_alloc. The loop is timed in the program; the result of the last
 * run is in `result`.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>

/* Mirrored in src/bench/maploop.rs. */
#define MAPLOOP_MAX_ENTRIES 1024

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAPLOOP_MAX_ENTRIES);
	__type(key, __u64);
	__type(value, __u64);
} maploop SEC(".maps");

/* The object's .bss: the last run, layout mirrored by MaploopResult in Rust. */
struct maploop_result {
	__u64 ns;            /* the bpf_loop() call, timed with bpf_ktime_get_ns() */
	__u64 pairs;         /* update+delete pairs that both succeeded */
	__s64 loop_ret;      /* what bpf_loop() returned */
	__u64 update_err;
	__u64 delete_err;
	__s64 last_update_err;
	__s64 last_delete_err;
	__u32 cpu_start;
	__u32 cpu_end;
};

struct maploop_result result;

struct loop_ctx {
	__u64 base;
	__u64 pairs;
};

static long one_pair(__u32 i, void *data)
{
	struct loop_ctx *lc = data;
	__u64 key = lc->base + i;
	__u64 val = key;
	long err;

	err = bpf_map_update_elem(&maploop, &key, &val, BPF_NOEXIST);
	if (err) {
		result.update_err++;
		result.last_update_err = err;
		return 1;
	}
	err = bpf_map_delete_elem(&maploop, &key);
	if (err) {
		result.delete_err++;
		result.last_delete_err = err;
		return 1;
	}
	lc->pairs++;
	return 0;
}

SEC("raw_tp")
int maploop_run(struct bpf_raw_tracepoint_args *ctx)
{
	struct loop_ctx lc = {};
	__u64 loops = ctx->args[0];
	__u64 start;
	long ret;

	lc.base = ctx->args[1];
	__builtin_memset(&result, 0, sizeof(result));
	result.cpu_start = bpf_get_smp_processor_id();
	start = bpf_ktime_get_ns();
	ret = bpf_loop(loops, one_pair, &lc, 0);
	result.ns = bpf_ktime_get_ns() - start;
	result.cpu_end = bpf_get_smp_processor_id();
	result.loop_ret = ret;
	result.pairs = lc.pairs;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
