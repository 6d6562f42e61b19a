// The memory traffic that any roi_align forward+backward must do, and nothing else, timed on
// this machine: a lower bound for the `fwd+bwd` column of benchmarks/cpu.py that no kernel
// can beat, whatever its arithmetic.
//
//   gcc -O2 -mavx2 -pthread benchmarks/memory_floor.c -o /tmp/memory_floor
//   /tmp/memory_floor GRAD_MB READ_MB OUT_MB [THREADS]
//
// One timed call, like one jitted forward+backward under XLA's CPU client:
//   forward:  read READ_MB of features (the pixels the rois' taps touch; read sequentially here,
//             the best case), write the OUT_MB output into a buffer already mapped;
//   backward: read the OUT_MB incoming gradient, write the GRAD_MB feature gradient into memory
//             freshly mapped for the call, as XLA's CPU client gets every buffer over glibc's
//             32 MiB mmap threshold, with the huge-page hint the jax_roi backward gives.
// The caches are flushed before each call, as a training step's other work would.
//
// `python benchmarks/cpu.py --traffic` prints the three sizes for each of its shapes: for the
// 200x304 rows (N=2, C=256, float32) GRAD_MB 124.5, OUT_MB 25.7, READ_MB 94.9 (box head) and
// 65.6 (mask head), the pixels that some roi's taps read with a nonzero weight.
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

enum { kCalls = 30, kMaxThreads = 64 };

static size_t grad_bytes, read_bytes, out_bytes;
static int threads;
static char *features, *out, *incoming, *grad;
static pthread_barrier_t between_passes;
static float sink[kMaxThreads];

// This thread's share [lo, hi) of a buffer of `bytes`, in whole 32-byte vectors.
static void Share(size_t bytes, long t, size_t* lo, size_t* hi) {
  const size_t vectors = bytes / 32;
  *lo = vectors * t / threads * 32;
  *hi = vectors * (t + 1) / threads * 32;
}

static void* Call(void* arg) {
  const long t = (long)arg;
  size_t lo, hi;
  __m256 acc = _mm256_setzero_ps();
  Share(read_bytes, t, &lo, &hi);
  for (size_t o = lo; o < hi; o += 32)
    acc = _mm256_add_ps(acc, _mm256_load_ps((float*)(features + o)));
  Share(out_bytes, t, &lo, &hi);
  for (size_t o = lo; o < hi; o += 32) _mm256_store_ps((float*)(out + o), acc);
  // The backward starts when the whole forward output exists.
  pthread_barrier_wait(&between_passes);
  for (size_t o = lo; o < hi; o += 32)
    acc = _mm256_add_ps(acc, _mm256_load_ps((float*)(incoming + o)));
  Share(grad_bytes, t, &lo, &hi);
  for (size_t o = lo; o < hi; o += 32) _mm256_store_ps((float*)(grad + o), acc);
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  sink[t] = lanes[0];  // keeps the reads
  return NULL;
}

static double NowMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int Less(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

// aligned_alloc wants a size that is a multiple of the alignment (and not zero).
static char* CacheLines(size_t bytes) { return aligned_alloc(64, (bytes / 64 + 1) * 64); }

static size_t Megabytes(const char* text) { return (size_t)(atof(text) * 1e6) / 32 * 32; }

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s GRAD_MB READ_MB OUT_MB [THREADS (default 2)]\n", argv[0]);
    return 2;
  }
  grad_bytes = Megabytes(argv[1]);
  read_bytes = Megabytes(argv[2]);
  out_bytes = Megabytes(argv[3]);
  threads = argc > 4 ? atoi(argv[4]) : 2;
  if (threads < 1 || threads > kMaxThreads || read_bytes > grad_bytes) {
    fprintf(stderr, "need 1 <= THREADS <= %d and READ_MB <= GRAD_MB\n", kMaxThreads);
    return 2;
  }
  // The features are as large as their gradient; the reads take the first READ_MB of them.
  const size_t flush_bytes = (size_t)64 << 20;
  features = CacheLines(grad_bytes);
  out = CacheLines(out_bytes);
  incoming = CacheLines(out_bytes);
  char* flush = CacheLines(flush_bytes);
  if (!features || !out || !incoming || !flush) return perror("aligned_alloc"), 1;
  memset(features, 1, grad_bytes);
  memset(out, 1, out_bytes);
  memset(incoming, 1, out_bytes);
  pthread_barrier_init(&between_passes, NULL, threads);

  double ms[kCalls];
  for (int call = 0; call < kCalls; ++call) {
    memset(flush, call, flush_bytes);
    const double start = NowMs();
    grad = mmap(NULL, grad_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (grad == MAP_FAILED) return perror("mmap"), 1;
    madvise(grad, grad_bytes, MADV_HUGEPAGE);
    pthread_t worker[kMaxThreads];
    for (long t = 0; t < threads; ++t) pthread_create(&worker[t], NULL, Call, (void*)t);
    for (long t = 0; t < threads; ++t) pthread_join(worker[t], NULL);
    munmap(grad, grad_bytes);
    ms[call] = NowMs() - start;
  }
  qsort(ms, kCalls, sizeof(double), Less);
  printf("gradient %.1f MB fresh, features %.1f MB read, output %.1f MB, %d threads: "
         "min %.2f ms, median %.2f ms over %d calls\n",
         grad_bytes / 1e6, read_bytes / 1e6, out_bytes / 1e6, threads, ms[0], ms[kCalls / 2],
         kCalls);
  free(flush);
  free(incoming);
  free(out);
  free(features);
  return 0;
}
