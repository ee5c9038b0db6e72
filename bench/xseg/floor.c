// bench/xseg/floor.c: what a round trip between two processes costs on this machine with no
// Node.js at all, for each way of waking the other side (not a test):
//
//   cc -O2 -o /var/tmp/xseg-floor bench/xseg/floor.c && flock /var/tmp/bench.lock /var/tmp/xseg-floor
//
// futex: FUTEX_WAIT/FUTEX_WAKE on a shared word (what the segment's waiter threads did);
// pipe+epoll: one byte into a pipe the other side watches with epoll (what a libuv loop watching
// the segment's doorbell FIFO does); spin: both sides spin on a shared word (what the segment's
// bounded spins do while they last); spin+yield: the same with sched_yield between looks. Prints
// the median round trip and, for pipe+epoll, the median cost of the waking write() alone.
#define _GNU_SOURCE
#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 20000
#define WARM 1000

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static void fwait(uint32_t* w, uint32_t v) {
  while (__atomic_load_n(w, __ATOMIC_SEQ_CST) == v) syscall(SYS_futex, w, FUTEX_WAIT, v, 0, 0, 0);
}

static void fwake(uint32_t* w) {
  __atomic_add_fetch(w, 1, __ATOMIC_SEQ_CST);
  syscall(SYS_futex, w, FUTEX_WAKE, 1, 0, 0, 0);
}

static void spin_until_changed(uint32_t* w, uint32_t v, int yield) {
  while (__atomic_load_n(w, __ATOMIC_SEQ_CST) == v) {
    if (yield) sched_yield();
    else __builtin_ia32_pause();
  }
}

enum { FUTEX, PIPE, SPIN, SPIN_YIELD };
static const char* names[] = {"futex", "pipe+epoll", "spin", "spin+yield"};

static void run(int mode) {
  uint32_t* w = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  double* lat = mmap(0, sizeof(double) * N * 2, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  double* wr = lat + N;
  int to_srv[2], to_cli[2];
  if (pipe(to_srv) || pipe(to_cli)) exit(1);
  fflush(stdout);
  pid_t pid = fork();
  int server = pid == 0;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN};
  epoll_ctl(ep, EPOLL_CTL_ADD, server ? to_srv[0] : to_cli[0], &ev);
  char b[64];
  for (int i = 0; i < N + WARM; i++) {
    if (!server) {
      double t = now_us(), tw = 0;
      uint32_t v = __atomic_load_n(&w[1], __ATOMIC_SEQ_CST);
      switch (mode) {
        case FUTEX: fwake(&w[0]); fwait(&w[1], v); break;
        case PIPE:
          tw = now_us();
          if (write(to_srv[1], "x", 1) != 1) exit(1);
          tw = now_us() - tw;
          epoll_wait(ep, &ev, 1, -1);
          if (read(to_cli[0], b, sizeof b) < 0) exit(1);
          break;
        default:
          __atomic_add_fetch(&w[0], 1, __ATOMIC_SEQ_CST);
          spin_until_changed(&w[1], v, mode == SPIN_YIELD);
      }
      if (i >= WARM) {
        lat[i - WARM] = now_us() - t;
        wr[i - WARM] = tw;
      }
    } else {
      switch (mode) {
        case FUTEX: fwait(&w[0], (uint32_t)i); fwake(&w[1]); break;
        case PIPE:
          epoll_wait(ep, &ev, 1, -1);
          if (read(to_srv[0], b, sizeof b) < 0 || write(to_cli[1], "x", 1) != 1) exit(1);
          break;
        default:
          spin_until_changed(&w[0], (uint32_t)i, mode == SPIN_YIELD);
          __atomic_add_fetch(&w[1], 1, __ATOMIC_SEQ_CST);
      }
    }
  }
  if (server) _exit(0);
  waitpid(pid, 0, 0);
  qsort(lat, N, sizeof(double), cmp);
  qsort(wr, N, sizeof(double), cmp);
  printf("| %s | %.1f | %.1f | %.1f |", names[mode], lat[N / 2], lat[N / 10], lat[N * 9 / 10]);
  if (mode == PIPE) printf(" waking write(): %.1f µs |\n", wr[N / 2]);
  else printf(" |\n");
}

int main(void) {
  printf("| wake-up | round trip median µs | p10 | p90 | note |\n|---|---:|---:|---:|---|\n");
  for (int m = FUTEX; m <= SPIN_YIELD; m++) run(m);
  return 0;
}
