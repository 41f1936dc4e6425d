// at::parallel_for for the CPU kernels. It is a header template: in a file compiled without OpenMP it
// silently runs every loop on one thread (ATen/ParallelOpenMP.h), so the build must pass -fopenmp
// (setup.py) and this stops it if it does not.
#pragma once

#include <ATen/Parallel.h>

#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#error "fused_lstm: compile the CPU kernels with -fopenmp, or at::parallel_for runs serially"
#endif
