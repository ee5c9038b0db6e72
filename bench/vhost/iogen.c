// A small fio stand-in for the bench guest (its initramfs has no fio: Debian's fio and its shared
// libraries are ~84 MiB, more than the bench's 256 MiB guest holds besides): QD threads, each
// with its own O_DIRECT descriptor, doing synchronous bs-sized reads or writes (random or
// sequential) on a block device for a time.
//   iogen DEVICE randread|randwrite|read|write BS QD SECONDS SPAN_MIB LABEL
// prints: RESULT LABEL <ops> <bytes> <seconds> <mean latency us>
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *dev;
static int writes, randomly;
static long bs, span;
static double until;
static uint64_t total_ops;
static double total_lat;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void *worker(void *arg) {
  long id = (long)arg;
  int fd = open(dev, (writes ? O_WRONLY : O_RDONLY) | O_DIRECT);
  if (fd < 0) { perror("open"); exit(1); }
  void *buf;
  if (posix_memalign(&buf, 4096, bs)) exit(1);
  memset(buf, 0x5a ^ (int)id, bs);
  uint64_t seed = 0x9e3779b97f4a7c15ull * (id + 1), ops = 0;
  long blocks = span / bs, seq = (blocks / 64) * id;
  double lat = 0;
  while (now() < until) {
    long b;
    if (randomly) {
      seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
      b = (long)(seed % (uint64_t)blocks);
    } else {
      b = seq++ % blocks;
    }
    double t0 = now();
    ssize_t r = writes ? pwrite(fd, buf, bs, b * bs) : pread(fd, buf, bs, b * bs);
    if (r != bs) { perror("io"); exit(1); }
    lat += now() - t0;
    ops++;
  }
  pthread_mutex_lock(&mu);
  total_ops += ops;
  total_lat += lat;
  pthread_mutex_unlock(&mu);
  close(fd);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 8) { fprintf(stderr, "usage: iogen DEVICE MODE BS QD SECONDS SPAN_MIB LABEL\n"); return 2; }
  dev = argv[1];
  writes = strstr(argv[2], "write") != NULL;
  randomly = strncmp(argv[2], "rand", 4) == 0;
  bs = atol(argv[3]);
  int qd = atoi(argv[4]);
  double secs = atof(argv[5]);
  span = atol(argv[6]) * 1048576L;
  double t0 = now();
  until = t0 + secs;
  pthread_t th[256];
  for (long i = 0; i < qd && i < 256; i++) pthread_create(&th[i], NULL, worker, (void *)i);
  for (long i = 0; i < qd && i < 256; i++) pthread_join(th[i], NULL);
  double el = now() - t0;
  printf("RESULT %s %llu %llu %.3f %.1f\n", argv[7], (unsigned long long)total_ops,
         (unsigned long long)total_ops * bs, el, total_ops ? total_lat / total_ops * 1e6 : 0);
  fflush(stdout);
  return 0;
}
