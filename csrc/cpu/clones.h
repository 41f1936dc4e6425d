// FL_CPU_CLONES: compile a function for AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) and baseline x86-64,
// the clone picked at load time for the CPU at hand. `flatten` inlines the math into each clone so that
// every clone gets vectorized for its instruction set. Elsewhere (other compilers or CPUs) it is a no-op.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FL_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#else
#define FL_CPU_CLONES
#endif
