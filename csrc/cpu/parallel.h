// Threads for the CPU kernels: at::parallel_for, and parallel_steps for a recurrence. at::parallel_for
// is a header template: in a file compiled without OpenMP it silently runs every loop on one thread
// (ATen/ParallelOpenMP.h), so the build must pass -fopenmp (setup.py) and this stops it if it does not.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#error "fused_lstm: compile the CPU kernels with -fopenmp, or at::parallel_for runs serially"
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fused_lstm {
namespace cpu {

// Runs step(i, begin, end) for the steps i = 0 .. steps-1 in order, each over all of [0, tasks), every
// thread taking the same share [begin, end) of the tasks at every step and waiting for the others
// before the next step. One team of threads for the whole recurrence: a fork and join per step
// (at::parallel_for) instead of a barrier made a forward at B = 8, H = 128 (16 µs a step) 9% slower on the
// 2-core development machine. Threads as for at::parallel_for (at::get_num_threads(); one inside a parallel region),
// at most one per task. `step` must not throw: it runs inside an OpenMP region.
template <typename StepFunction>
void parallel_steps(int64_t steps, int64_t tasks, const StepFunction& step) {
  if (steps <= 0 || tasks <= 0) return;
  const int64_t threads =
      at::in_parallel_region() ? 1 : std::min<int64_t>(at::get_num_threads(), tasks);
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(static_cast<int>(threads))
    {
      const int64_t team = omp_get_num_threads(), thread = omp_get_thread_num();
      const int64_t share = at::divup(tasks, team);
      const int64_t begin = std::min(tasks, thread * share), end = std::min(tasks, begin + share);
      for (int64_t i = 0; i < steps; ++i) {
        if (begin < end) step(i, begin, end);
#pragma omp barrier
      }
    }
    return;
  }
#endif
  for (int64_t i = 0; i < steps; ++i) step(i, int64_t(0), tasks);
}

}  // namespace cpu
}  // namespace fused_lstm
