// The generic CPU executor: an op's device plan (the per-thread code its CUDA kernels run)
// on XLA's intra-op thread pool. The plan's kernels become phases run one after another, each
// split into chunks of consecutive threads. The backward always takes the deterministic
// gather form: every output element has one writer, so the result is the same bits for any
// number of threads (the atomic scatter's adds are plain += off the device).
#ifndef JAX_ROI_CPU_EXECUTOR_H_
#define JAX_ROI_CPU_EXECUTOR_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "cpu_common.h"
#include "jax_roi/roi_call.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cpu {

// Records a plan's kernels (and clears) as phases instead of running them.
class PhaseRecorder {
 public:
  // Device threads per task: enough work to amortise a task, few enough to balance uneven
  // rois.
  static constexpr int64_t kChunk = 256;
  // Bytes a clearing task zeroes.
  static constexpr size_t kBlock = size_t{1} << 20;

  template <typename Op>
  void Run(const Op& op) {
    const int64_t n = op.size();
    phases_.push_back({CeilDiv(n, kChunk), [op, n](int64_t t) {
                         const int64_t end = std::min(n, (t + 1) * kChunk);
                         for (int64_t i = t * kChunk; i < end; ++i) op(i);
                       }});
  }
  void Zero(void* data, size_t bytes) {
    char* p = static_cast<char*>(data);
    phases_.push_back({static_cast<int64_t>((bytes + kBlock - 1) / kBlock), [p, bytes](int64_t t) {
                         const size_t b = static_cast<size_t>(t) * kBlock;
                         std::memset(p + b, 0, std::min(kBlock, bytes - b));
                       }});
  }

  // Runs the recorded phases in order on the pool; `keep` lives until the last one is done.
  ffi::Future Launch(ffi::ThreadPool& pool, int64_t work, std::shared_ptr<void> keep) {
    std::vector<int64_t> counts;
    for (const Phase& p : phases_) counts.push_back(p.tasks);
    auto phases = std::make_shared<std::vector<Phase>>(std::move(phases_));
    return ParallelPhases(pool, std::move(counts), work,
                          [phases, keep](int64_t i, int64_t t) { (*phases)[i].run(t); });
  }

 private:
  struct Phase {
    int64_t tasks;
    std::function<void(int64_t)> run;
  };
  std::vector<Phase> phases_;
};

template <typename Op>
ffi::Future RunDevicePlan(ffi::ThreadPool& pool, const RoiCall& c, typename Op::Attrs a) {
  a.deterministic = true;
  const size_t bytes = Op::ScratchBytes(c, a);
  std::shared_ptr<void> scratch;
  if (bytes > 0) {
    if (bytes == SIZE_MAX) {
      return ErrorFuture(ffi::Error(ffi::ErrorCode::kResourceExhausted,
                                    std::string("jax_roi ") + Op::kName +
                                        ": the backward's roi lists do not fit in memory"));
    }
    scratch.reset(new (std::nothrow) uint64_t[bytes / sizeof(uint64_t) + 1],
                  std::default_delete<uint64_t[]>());
    if (!scratch) {
      return ErrorFuture(ffi::Error(ffi::ErrorCode::kResourceExhausted,
                                    std::string("jax_roi ") + Op::kName + ": cannot allocate " +
                                        std::to_string(bytes) + " bytes of scratch"));
    }
  }
  PhaseRecorder plan;
  Op::Run(plan, c, a, scratch.get());
  const RoiShape& s = c.s;
  return plan.Launch(pool, s.n * s.c * s.h * s.w + s.k * s.c * s.ph * s.pw * 16,
                     std::move(scratch));
}

}  // namespace cpu
}  // namespace jax_roi

#endif  // JAX_ROI_CPU_EXECUTOR_H_
