// Contention-tolerant parallel loop for the CPU kernels.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace tmd {

// Loop over [0, n) in chunks pulled from a shared atomic counter by every thread of
// torch's intra-op pool: a thread that the OS deschedules (shared machines) delays the
// others by at most one chunk instead of half the loop, as a static split would. Runs
// serially when n < min_parallel, where fork/join costs more than it saves.
// body(tid, begin, end) may be called several times per thread.
template <class F>
void dynamic_for(int64_t n, int64_t chunk, int64_t min_parallel, const F& body) {
  const int nt = at::get_num_threads();
  if (n <= 0) return;
  if (nt <= 1 || n < min_parallel || at::in_parallel_region()) {
    body(0, int64_t(0), n);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, nt, 1, [&](int64_t, int64_t) {
    const int tid = at::get_thread_num();
    for (;;) {
      const int64_t b = next.fetch_add(chunk);
      if (b >= n) break;
      body(tid, b, std::min(n, b + chunk));
    }
  });
}

}  // namespace tmd
