// SPDX-License-Identifier: GPL-2.0
/*
 * global_ma_{hash_delete,overwrite,map_free,cross_cpu}: test objects from
 * the global allocator stored in map values as referenced kptrs.
 *
 * The runner fills in `ctl` (the .bss) with an operation, a map and a key,
 * then calls getpgid() from a thread pinned to the CPU it wants; the one
 * fentry program below that serves that operation runs once and writes its
 * results back into `ctl`. Only one operation is in flight at a time.
 *
 *   GMA_OP_STASH      lookup or insert the element, allocate an object and
 *                     bpf_kptr_xchg() it in; an old object found there is
 *                     released (and counted in old_found)
 *   GMA_OP_OVERWRITE  bpf_map_update_elem(BPF_EXIST) with an empty value,
 *                     which makes the map free the object it held, then
 *                     allocate a new object and xchg it into the new value
 *   GMA_OP_DELETE     bpf_map_delete_elem()
 *   GMA_OP_TAKE       xchg the object out and release it with the kfunc
 *   GMA_OP_PEEK       read the object in place (untrusted load)
 *
 * Each operation has its own program so that objects carry the id of the
 * program that allocated them and fdinfo attributes counts per operation.
 */
#include "vmlinux.h"
#include <bpf_helpers.h>
#include "global_ma.h"

/* Mirrored in src/tests/global_ma/kptr.rs. */
#define GMA_MAX_ENTRIES 256

enum {
	GMA_OP_NONE,
	GMA_OP_STASH,
	GMA_OP_OVERWRITE,
	GMA_OP_DELETE,
	GMA_OP_TAKE,
	GMA_OP_PEEK,
};

enum {
	GMA_MAP_HASH,		/* BPF_F_NO_PREALLOC */
	GMA_MAP_HASH_PREALLOC,
	GMA_MAP_LRU_HASH,
	GMA_MAP_ARRAY,
};

/* Program-side failures, reported in ctl.err (helpers' errors are < 0). */
enum {
	GMA_ERR_NO_ELEM = 1,	/* lookup found no element */
	GMA_ERR_NO_OBJ,		/* bpf_ma_testobj_new() returned NULL */
	GMA_ERR_BAD_MAP,	/* unknown ctl.map */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, GMA_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct gma_val);
} hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GMA_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct gma_val);
} hash_prealloc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GMA_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct gma_val);
} lru_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GMA_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct gma_val);
} array SEC(".maps");

/* The object's .bss, mirrored by `Ctl` in Rust. */
struct gma_ctl {
	/* in */
	__u32 tgid;		/* the runner's tgid */
	__u32 op;		/* GMA_OP_* */
	__u32 map;		/* GMA_MAP_* */
	__u32 key;
	/* out */
	__u32 runs;		/* operations served (must be 1 per trigger) */
	__s32 err;		/* last error: helper errno (< 0) or GMA_ERR_* */
	__u32 cpu;		/* CPU the serving program ran on */
	__u32 found;		/* take/peek: an object was there */
	__u64 allocs;		/* bpf_ma_testobj_new() returned an object */
	__u64 nulls;		/* bpf_ma_testobj_new() returned NULL */
	__u64 releases;		/* bpf_ma_testobj_release() calls */
	__u64 old_found;	/* stash/overwrite: xchg gave back an object */
	/* the object allocated (stash, overwrite) or found (take, peek) */
	__u64 obj_magic;
	__u64 obj_cpu;
	__u64 obj_prog_id;
};

struct gma_ctl ctl;

static __always_inline int serving(__u32 op)
{
	if (!ctl.tgid || (__u32)(bpf_get_current_pid_tgid() >> 32) != ctl.tgid ||
	    ctl.op != op)
		return 0;
	ctl.runs++;
	ctl.cpu = bpf_get_smp_processor_id();
	return 1;
}

static __always_inline void note_obj(struct bpf_ma_testobj *obj)
{
	ctl.obj_magic = obj->magic;
	ctl.obj_cpu = obj->cpu;
	ctl.obj_prog_id = obj->prog_id;
}

/* The element of `key`, inserted empty if missing (arrays always have it). */
static __always_inline struct gma_val *get_or_insert(void *map, __u32 key)
{
	struct gma_val zero = {}, *v;
	long err;

	v = bpf_map_lookup_elem(map, &key);
	if (v)
		return v;
	err = bpf_map_update_elem(map, &key, &zero, BPF_NOEXIST);
	if (err) {
		ctl.err = err;
		return NULL;
	}
	v = bpf_map_lookup_elem(map, &key);
	if (!v)
		ctl.err = GMA_ERR_NO_ELEM;
	return v;
}

/* Allocate an object and xchg it into v; release what was there. */
static __always_inline void put_new(struct gma_val *v)
{
	struct bpf_ma_testobj *obj, *old;

	obj = bpf_ma_testobj_new(NULL);
	if (!obj) {
		ctl.nulls++;
		ctl.err = GMA_ERR_NO_OBJ;
		return;
	}
	ctl.allocs++;
	note_obj(obj);
	old = bpf_kptr_xchg(&v->obj, obj);
	if (old) {
		ctl.old_found++;
		ctl.releases++;
		bpf_ma_testobj_release(old, NULL);
	}
}

static __always_inline void stash(void *map)
{
	struct gma_val *v = get_or_insert(map, ctl.key);

	if (v)
		put_new(v);
}

static __always_inline void overwrite(void *map)
{
	struct gma_val zero = {}, *v;
	__u32 key = ctl.key;
	long err;

	err = bpf_map_update_elem(map, &key, &zero, BPF_EXIST);
	if (err) {
		ctl.err = err;
		return;
	}
	v = bpf_map_lookup_elem(map, &key);
	if (!v) {
		ctl.err = GMA_ERR_NO_ELEM;
		return;
	}
	put_new(v);
}

static __always_inline void delete(void *map)
{
	__u32 key = ctl.key;
	long err;

	err = bpf_map_delete_elem(map, &key);
	if (err)
		ctl.err = err;
}

static __always_inline void take(void *map)
{
	struct bpf_ma_testobj *obj;
	__u32 key = ctl.key;
	struct gma_val *v;

	v = bpf_map_lookup_elem(map, &key);
	if (!v) {
		ctl.err = GMA_ERR_NO_ELEM;
		return;
	}
	obj = bpf_kptr_xchg(&v->obj, NULL);
	if (!obj)
		return;
	ctl.found = 1;
	note_obj(obj);
	ctl.releases++;
	bpf_ma_testobj_release(obj, NULL);
}

static __always_inline void peek(void *map)
{
	struct bpf_ma_testobj *obj;
	__u32 key = ctl.key;
	struct gma_val *v;

	v = bpf_map_lookup_elem(map, &key);
	if (!v) {
		ctl.err = GMA_ERR_NO_ELEM;
		return;
	}
	obj = v->obj;	/* PTR_TO_BTF_ID | PTR_UNTRUSTED: probe reads */
	if (!obj)
		return;
	ctl.found = 1;
	ctl.obj_magic = obj->magic;
	ctl.obj_cpu = obj->cpu;
	ctl.obj_prog_id = obj->prog_id;
}

/* Calls fn with the map ctl.map names, as a constant map pointer. */
#define ON_MAP(fn)						\
	do {							\
		switch (ctl.map) {				\
		case GMA_MAP_HASH:				\
			fn(&hash);				\
			break;					\
		case GMA_MAP_HASH_PREALLOC:			\
			fn(&hash_prealloc);			\
			break;					\
		case GMA_MAP_LRU_HASH:				\
			fn(&lru_hash);				\
			break;					\
		case GMA_MAP_ARRAY:				\
			fn(&array);				\
			break;					\
		default:					\
			ctl.err = GMA_ERR_BAD_MAP;		\
		}						\
	} while (0)

SEC("fentry/__x64_sys_getpgid")
int gma_stash(void *ctx)
{
	if (serving(GMA_OP_STASH))
		ON_MAP(stash);
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int gma_overwrite(void *ctx)
{
	if (serving(GMA_OP_OVERWRITE))
		ON_MAP(overwrite);
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int gma_delete(void *ctx)
{
	if (serving(GMA_OP_DELETE))
		ON_MAP(delete);
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int gma_take(void *ctx)
{
	if (serving(GMA_OP_TAKE))
		ON_MAP(take);
	return 0;
}

SEC("fentry/__x64_sys_getpgid")
int gma_peek(void *ctx)
{
	if (serving(GMA_OP_PEEK))
		ON_MAP(peek);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
