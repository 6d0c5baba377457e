/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared definitions of the global BPF memory allocator selftests
 * (global_ma_*.bpf.c, src/tests/global_ma/ in the runner).
 *
 * The kernel side is patches/global-ma/: struct bpf_ma_testobj (from
 * vmlinux.h) is allocated from bpf_global_ma by bpf_ma_testobj_new() and
 * freed by bpf_ma_testobj_release(); maps holding one in a __kptr_ref field
 * free it with the type's destructor. The hidden aux__prog argument is
 * filled in by the verifier: programs pass NULL.
 *
 * Every constant here is mirrored in the Rust runner; change both sides
 * together.
 */
#ifndef __GLOBAL_MA_H
#define __GLOBAL_MA_H

/* clang < 15 silently drops btf_type_tag: __kptr_ref would then reach the
 * kernel as a plain pointer. The runner checks the objects' BTF for the
 * "kptr_ref" tag before loading them (src/btf_tags.rs).
 */
#ifndef __kptr_ref
#define __kptr_ref __attribute__((btf_type_tag("kptr_ref")))
#endif

#ifndef ENOENT
#define ENOENT 2
#endif
#ifndef ENOMEM
#define ENOMEM 12
#endif

/* BPF_MAP_TYPE_GLOBAL_MA_RESERVE in the series' enum bpf_map_type, written
 * as a number so that the objects build on any tree (the runner's
 * prefill::BPF_MAP_TYPE_GLOBAL_MA_RESERVE).
 */
#define GMA_MAP_TYPE_RESERVE 32

/* A reservation map: one 32-byte object on every CPU while it lives */
#define GMA_RESERVE_MAP(name)				\
	struct {					\
		__uint(type, GMA_MAP_TYPE_RESERVE);	\
		__uint(value_size, 32);			\
		__uint(max_entries, 1);			\
	} name SEC(".maps")

/* struct bpf_ma_testobj's magic while the object is allocated ("bpfatest") */
#define GMA_MAGIC 0x7473657461706662ULL

extern struct bpf_ma_testobj *bpf_ma_testobj_new(void *aux__prog) __ksym;
extern void bpf_ma_testobj_release(struct bpf_ma_testobj *obj,
				   void *aux__prog) __ksym;

/* A map value holding one test object. `tag` is plain data. */
struct gma_val {
	struct bpf_ma_testobj __kptr_ref *obj;
	__u64 tag;
};

#endif /* __GLOBAL_MA_H */
