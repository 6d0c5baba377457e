/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared definitions for the rig's BPF selftest programs.
 *
 * Every constant here is mirrored in the Rust runner (bpf-selftests/src);
 * change both sides together.
 */
#ifndef __RIG_H
#define __RIG_H

/* Upper bound on CPU ids the programs account for (runner: cpu::MAX_CPUS). */
#define RIG_MAX_CPUS 64

/* The runner's thread group id, filled in by user space before load. */
#define RIG_IS_RUNNER(tgid, id) ((tgid) != 0 && (__u32)((id) >> 32) == (tgid))

/* Hash-map key for element number `seq` inserted on `cpu`. */
static __always_inline __u64 rig_key(__u32 cpu, __u32 seq)
{
	return ((__u64)cpu << 32) | seq;
}

#endif /* __RIG_H */
