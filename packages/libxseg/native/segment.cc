#include "segment.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>

namespace xseg {

void fail(const char* code, const std::string& msg) { throw Error{code, msg, false}; }
void corrupt(const std::string& msg) { throw Error{"EIO", "segment corrupt: " + msg, true}; }

Mapping::~Mapping() {
  if (base != nullptr) munmap(base, size);
}

// getpid() is a real system call in current glibc, and system calls are what a round trip
// costs; the pid is read once per process (and again in a forked child).
static uint32_t g_pid = 0;
static void reset_pid() { g_pid = static_cast<uint32_t>(getpid()); }
static uint32_t self_pid() {
  if (g_pid == 0) {
    reset_pid();
    pthread_atfork(nullptr, nullptr, reset_pid);
  }
  return g_pid;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static void init_lock(Lock* l) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&l->m, &a);
  pthread_mutexattr_destroy(&a);
  l->owner_pid = 0;
}

static std::string shm_path(const std::string& name) { return "/" + name; }

static void check_name(const std::string& name) {
  if (name.empty() || name.size() > 200 || name.find('/') != std::string::npos)
    fail("EINVAL", "segment name '" + name + "' must be 1-200 characters without '/'");
}

bool Seg::pid_alive(uint32_t pid) {
  if (pid == 0) return false;
  if (kill(static_cast<pid_t>(pid), 0) != 0 && errno != EPERM) return false;
  // A killed child that its parent has not reaped yet is a zombie: dead for our purposes.
  char path[64];
  snprintf(path, sizeof path, "/proc/%u/stat", pid);
  FILE* f = fopen(path, "r");
  if (f == nullptr) return true;
  char buf[512];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char* p = strrchr(buf, ')');
  if (p != nullptr && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X')) return false;
  return true;
}

std::shared_ptr<Mapping> Seg::create(const std::string& name, const Geometry& g) {
  check_name(name);
  if (g.nr_ports < 1 || g.nr_ports > 65536) fail("EINVAL", "nr_ports must be 1..65536");
  if (g.dynports >= g.nr_ports)
    fail("EINVAL", "dynports (the first dynamic port) must be below nr_ports");
  if (g.page_shift < 9 || g.page_shift > 21) fail("EINVAL", "page_shift must be 9..21");
  if (g.heap_size < (1u << 20) || g.heap_size > (1ull << 40)) fail("EINVAL", "heap size must be 1 MiB..1 TiB");
  if (g.nr_reqs < 16 || g.nr_reqs > (1u << 20)) fail("EINVAL", "nr_reqs must be 16..1048576");
  uint64_t page = 1ull << g.page_shift;
  uint64_t ports_off = align_up(sizeof(Header), page);
  uint64_t reqs_off = align_up(ports_off + uint64_t(g.nr_ports) * sizeof(Port), 64);
  uint64_t heap_off = align_up(reqs_off + uint64_t(g.nr_reqs) * sizeof(Req), page);
  uint64_t heap_size = g.heap_size / CHUNK_ALIGN * CHUNK_ALIGN;
  uint64_t size = align_up(heap_off + heap_size, page);

  int fd = shm_open(shm_path(name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0660);
  if (fd < 0) {
    if (errno == EEXIST) fail("EBUSY", "segment '" + name + "' already exists (destroy it first)");
    fail("EIO", "shm_open(" + name + "): " + strerror(errno));
  }
  // User and group read-write whatever the umask, never others: members of the creator's group
  // (Archipelago's GROUP, see share()) join and use it.
  fchmod(fd, 0660);
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int e = errno;
    close(fd);
    shm_unlink(shm_path(name).c_str());
    fail("ENOSPC", "cannot size segment: " + std::string(strerror(e)));
  }
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    shm_unlink(shm_path(name).c_str());
    fail("EIO", "mmap: " + std::string(strerror(errno)));
  }
  auto m = std::make_shared<Mapping>();
  m->base = static_cast<uint8_t*>(p);
  m->size = size;
  m->name = name;
  Header* h = reinterpret_cast<Header*>(m->base);
  h->header_size = sizeof(Header);
  h->segment_size = size;
  h->page_shift = g.page_shift;
  h->nr_ports = g.nr_ports;
  h->dynports = g.dynports;
  h->nr_reqs = g.nr_reqs;
  h->heap_size = heap_size;
  h->ports_off = ports_off;
  h->reqs_off = reqs_off;
  h->heap_off = heap_off;
  h->port_size = sizeof(Port);
  h->req_size = sizeof(Req);
  h->creator_pid = self_pid();
  snprintf(h->name, sizeof h->name, "%s", name.c_str());
  init_lock(&h->seg_lock);
  init_lock(&h->heap_lock);
  for (uint32_t i = 0; i < g.nr_ports; i++) {
    Port* pt = reinterpret_cast<Port*>(m->base + ports_off + uint64_t(i) * sizeof(Port));
    init_lock(&pt->lock);
    pt->portno = i;
    pt->rq = pt->pq = pt->fq = List{NONE, NONE, 0, 0};
  }
  for (uint32_t i = 0; i < g.nr_reqs; i++) {
    Req* r = reinterpret_cast<Req*>(m->base + reqs_off + uint64_t(i) * sizeof(Req));
    r->magic = REQ_MAGIC;
    r->gen = 1;
    r->loc = LOC_POOL;
    r->loc_port = NONE;
    r->next = i + 1 < g.nr_reqs ? i + 1 : NONE;
    r->data_off = NONE64;
  }
  h->pool = List{0, g.nr_reqs - 1, g.nr_reqs, 0};
  // the heap starts as one free chunk
  Chunk* c = reinterpret_cast<Chunk*>(m->base + heap_off);
  c->size_used = heap_size;
  c->magic = CHUNK_MAGIC;
  c->next_free = c->prev_free = NONE64;
  *reinterpret_cast<uint64_t*>(m->base + heap_off + heap_size - CHUNK_FTR) = heap_size;
  h->heap_free_head = 0;
  h->heap_used = 0;
  // Publish: joiners check magic and version, so write them last.
  h->version = VERSION;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  memcpy(h->magic, MAGIC, sizeof MAGIC);
  return m;
}

std::shared_ptr<Mapping> Seg::join(const std::string& name) {
  check_name(name);
  int fd = shm_open(shm_path(name).c_str(), O_RDWR, 0);
  if (fd < 0 && errno == EACCES)
    fail("EIO", "shm_open(" + name + "): permission denied: only its owner and the members of its group (Archipelago's GROUP) may join /dev/shm/" + name);
  if (fd < 0) {
    if (errno == ENOENT) fail("EINVAL", "no segment '" + name + "' (create it first)");
    fail("EIO", "shm_open(" + name + "): " + strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Header))) {
    close(fd);
    corrupt("/dev/shm/" + name + " is too small to hold a segment header");
  }
  void* p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) fail("EIO", "mmap: " + std::string(strerror(errno)));
  auto m = std::make_shared<Mapping>();
  m->base = static_cast<uint8_t*>(p);
  m->size = static_cast<uint64_t>(st.st_size);
  m->name = name;
  Header* h = reinterpret_cast<Header*>(m->base);
  if (memcmp(h->magic, MAGIC, sizeof MAGIC) != 0) corrupt("/dev/shm/" + name + " has no XSEG magic");
  if (h->version != VERSION)
    fail("EINVAL", "segment version " + std::to_string(h->version) + ", this build speaks " +
                       std::to_string(VERSION) + " (destroy and re-create it)");
  Seg s(m);  // checks the geometry
  return m;
}

// The doorbell directory: setgid so that every FIFO made in it has the directory's group, and
// rwx for user and group so that any member can make its own.
static void make_doorbell_dir(const std::string& dir) {
  if (mkdir(dir.c_str(), 0770) == 0) chmod(dir.c_str(), 02770);
  else if (errno != EEXIST) fail("EIO", "mkdir " + dir + ": " + strerror(errno));
}

void Seg::share(const std::string& name, int64_t uid, int64_t gid) {
  check_name(name);
  std::string path = "/dev/shm/" + name;
  if (chown(path.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(gid)) != 0 || chmod(path.c_str(), 0660) != 0)
    fail("EIO", "chown/chmod " + path + ": " + strerror(errno));
  std::string dir = doorbell_dir(name);
  make_doorbell_dir(dir);
  if (chown(dir.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(gid)) != 0 || chmod(dir.c_str(), 02770) != 0)
    fail("EIO", "chown/chmod " + dir + ": " + strerror(errno));
  // Doorbells made before (by the creator, by clients): the group's too.
  if (DIR* d = opendir(dir.c_str())) {
    while (struct dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::string f = dir + "/" + e->d_name;
      if (chown(f.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(gid)) == 0) chmod(f.c_str(), 0660);
    }
    closedir(d);
  }
}

void Seg::destroy(const std::string& name) {
  check_name(name);
  if (shm_unlink(shm_path(name).c_str()) != 0) {
    if (errno == ENOENT) fail("EINVAL", "no segment '" + name + "'");
    fail("EIO", "shm_unlink: " + std::string(strerror(errno)));
  }
  // The doorbells go with it (peers that still have the segment mapped keep theirs open).
  std::string dir = doorbell_dir(name);
  if (DIR* d = opendir(dir.c_str())) {
    while (struct dirent* e = readdir(d))
      if (e->d_name[0] != '.') unlink((dir + "/" + e->d_name).c_str());
    closedir(d);
    rmdir(dir.c_str());
  }
}

Seg::Seg(std::shared_ptr<Mapping> m) : map_(std::move(m)) { check_geometry(); }

Seg::~Seg() {
  for (auto& [n, fd] : bells_) close(fd);
}

void Seg::check_geometry() const {
  const Header* h = hdr();
  uint64_t sz = map_->size;
  if (h->header_size != sizeof(Header) || h->port_size != sizeof(Port) || h->req_size != sizeof(Req))
    corrupt("structure sizes differ from this build");
  if (h->segment_size != sz) corrupt("recorded size differs from the mapping");
  if (h->nr_ports < 1 || h->nr_ports > 65536 || h->dynports >= h->nr_ports) corrupt("bad port counts");
  if (h->nr_reqs < 1 || h->nr_reqs > (1u << 20)) corrupt("bad request count");
  if (h->ports_off < sizeof(Header) || h->ports_off + uint64_t(h->nr_ports) * sizeof(Port) > h->reqs_off ||
      h->reqs_off + uint64_t(h->nr_reqs) * sizeof(Req) > h->heap_off || h->heap_off + h->heap_size > sz ||
      h->heap_size % CHUNK_ALIGN != 0 || h->heap_size < MIN_CHUNK)
    corrupt("regions overlap or exceed the segment");
}

Port* Seg::port(uint32_t n) const {
  if (n >= hdr()->nr_ports) fail("EINVAL", "port " + std::to_string(n) + " out of range");
  return reinterpret_cast<Port*>(map_->base + hdr()->ports_off + uint64_t(n) * sizeof(Port));
}

Req* Seg::req(uint32_t i) const {
  if (i >= hdr()->nr_reqs) corrupt("request index " + std::to_string(i) + " out of range");
  Req* r = reinterpret_cast<Req*>(map_->base + hdr()->reqs_off + uint64_t(i) * sizeof(Req));
  if (r->magic != REQ_MAGIC) corrupt("request " + std::to_string(i) + " has a bad magic");
  return r;
}

// ---------------------------------------------------------------------------------------------
// Locks

bool Seg::lock(Lock* l) {
  int r = pthread_mutex_lock(&l->m);
  bool recovered = false;
  if (r == EOWNERDEAD) {
    // The holder died inside the critical section; the caller repairs what the lock guards.
    pthread_mutex_consistent(&l->m);
    recovered = true;
  } else if (r != 0) {
    fail("EIO", "cannot take a segment lock: " + std::string(strerror(r)));
  }
  l->owner_pid = self_pid();
  return recovered;
}

void Seg::unlock(Lock* l) {
  l->owner_pid = 0;
  pthread_mutex_unlock(&l->m);
}

namespace {
struct Guard {
  Seg* s;
  Lock* l;
  ~Guard() { s->unlock(l); }
};
}  // namespace

bool Seg::lock_port(Port* p, uint32_t n) {
  bool rec = lock(&p->lock);
  if (rec) repair_queues(p, n);
  return rec;
}

void Seg::repair_queues(Port* p, uint32_t n) {
  list_repair(&p->rq, LOC_RQ, n);
  list_repair(&p->pq, LOC_PQ, n);
  list_repair(&p->fq, LOC_FQ, n);
}

// ---------------------------------------------------------------------------------------------
// Lists

static Req* raw_req(const Seg* s, uint32_t i) {
  if (i >= s->hdr()->nr_reqs) return nullptr;
  Req* r = reinterpret_cast<Req*>(s->mapping()->base + s->hdr()->reqs_off + uint64_t(i) * sizeof(Req));
  return r->magic == REQ_MAGIC ? r : nullptr;
}

void Seg::list_repair(List* l, uint32_t loc, uint32_t loc_port) {
  uint32_t cur = l->head, last = NONE, n = 0;
  uint32_t head = l->head;
  while (cur != NONE && n < hdr()->nr_reqs) {
    Req* r = raw_req(this, cur);
    if (r == nullptr || r->loc != loc || r->loc_port != loc_port) break;
    last = cur;
    n++;
    cur = r->next;
  }
  if (last != NONE) raw_req(this, last)->next = NONE;
  l->head = n ? head : NONE;
  l->tail = last;
  __atomic_store_n(&l->count, n, __ATOMIC_SEQ_CST);
}

void Seg::list_push_tail(List* l, uint32_t idx, uint32_t loc, uint32_t loc_port) {
  Req* r = req(idx);
  r->next = NONE;
  r->loc = loc;
  r->loc_port = loc_port;
  if (l->count != 0) {
    Req* t = raw_req(this, l->tail);
    if (t == nullptr || t->loc != loc || t->loc_port != loc_port || l->count > hdr()->nr_reqs) {
      list_repair(l, loc, loc_port);
      t = l->count ? raw_req(this, l->tail) : nullptr;
    }
    if (t != nullptr) {
      t->next = idx;
      l->tail = idx;
      __atomic_store_n(&l->count, l->count + 1, __ATOMIC_SEQ_CST);
      return;
    }
  }
  l->head = l->tail = idx;
  __atomic_store_n(&l->count, 1u, __ATOMIC_SEQ_CST);
}

void Seg::list_push_head(List* l, uint32_t idx, uint32_t loc, uint32_t loc_port) {
  Req* r = req(idx);
  r->loc = loc;
  r->loc_port = loc_port;
  if (l->count == 0 || l->count > hdr()->nr_reqs || raw_req(this, l->head) == nullptr) {
    r->next = NONE;
    l->head = l->tail = idx;
    __atomic_store_n(&l->count, 1u, __ATOMIC_SEQ_CST);
    return;
  }
  r->next = l->head;
  l->head = idx;
  __atomic_store_n(&l->count, l->count + 1, __ATOMIC_SEQ_CST);
}

uint32_t Seg::list_pop(List* l, uint32_t loc, uint32_t loc_port) {
  if (l->count == 0) return NONE;
  uint32_t idx = l->head;
  Req* r = raw_req(this, idx);
  if (r == nullptr || r->loc != loc || r->loc_port != loc_port || l->count > hdr()->nr_reqs) {
    list_repair(l, loc, loc_port);
    corrupt("queue of port " + std::to_string(loc_port) + " had a bad entry (truncated)");
  }
  uint32_t count = l->count - 1;
  if (count == 0 || r->next == NONE) {
    l->head = l->tail = NONE;
    count = 0;
  } else {
    l->head = r->next;
  }
  __atomic_store_n(&l->count, count, __ATOMIC_SEQ_CST);
  r->next = NONE;
  return idx;
}

// ---------------------------------------------------------------------------------------------
// Heap: boundary tags, an explicit doubly linked free list, first fit, split from the end,
// coalescing with both neighbours on free.

Chunk* Seg::chunk_at(uint64_t off, bool want_used) const {
  uint64_t hs = hdr()->heap_size;
  if (off % CHUNK_ALIGN != 0 || off >= hs || hs - off < MIN_CHUNK) return nullptr;
  Chunk* c = reinterpret_cast<Chunk*>(heap() + off);
  uint64_t size = c->size_used & ~1ull;
  if (c->magic != CHUNK_MAGIC || size < MIN_CHUNK || size % CHUNK_ALIGN != 0 || size > hs - off) return nullptr;
  if (((c->size_used & 1) != 0) != want_used) return nullptr;
  if (*reinterpret_cast<uint64_t*>(heap() + off + size - CHUNK_FTR) != c->size_used) return nullptr;
  return c;
}

static void set_size(uint8_t* heap, uint64_t off, uint64_t size_used) {
  Chunk* c = reinterpret_cast<Chunk*>(heap + off);
  c->size_used = size_used;
  c->magic = CHUNK_MAGIC;
  *reinterpret_cast<uint64_t*>(heap + off + (size_used & ~1ull) - CHUNK_FTR) = size_used;
}

void Seg::free_list_remove(Chunk* c, uint64_t off) {
  Header* h = hdr();
  if (c->prev_free == NONE64) {
    if (h->heap_free_head != off) corrupt("heap free list head mismatch");
    h->heap_free_head = c->next_free;
  } else {
    Chunk* p = chunk_at(c->prev_free, false);
    if (p == nullptr) corrupt("heap free list link");
    p->next_free = c->next_free;
  }
  if (c->next_free != NONE64) {
    Chunk* n = chunk_at(c->next_free, false);
    if (n == nullptr) corrupt("heap free list link");
    n->prev_free = c->prev_free;
  }
}

void Seg::free_list_push(Chunk* c, uint64_t off) {
  Header* h = hdr();
  c->prev_free = NONE64;
  c->next_free = h->heap_free_head;
  if (h->heap_free_head != NONE64) {
    Chunk* n = chunk_at(h->heap_free_head, false);
    if (n == nullptr) corrupt("heap free list head");
    n->prev_free = off;
  }
  h->heap_free_head = off;
}

void Seg::heap_rebuild() {
  Header* h = hdr();
  uint64_t off = 0, used = 0, nused = 0;
  uint64_t hs = h->heap_size;
  h->heap_free_head = NONE64;
  uint64_t run_start = NONE64, run_size = 0;
  auto flush = [&]() {
    if (run_start == NONE64) return;
    set_size(heap(), run_start, run_size);
    Chunk* c = reinterpret_cast<Chunk*>(heap() + run_start);
    free_list_push(c, run_start);
    run_start = NONE64;
  };
  while (off < hs) {
    Chunk* c = reinterpret_cast<Chunk*>(heap() + off);
    uint64_t size = c->size_used & ~1ull;
    if (c->magic != CHUNK_MAGIC || size < MIN_CHUNK || size % CHUNK_ALIGN || size > hs - off)
      corrupt("heap chunk at " + std::to_string(off) + " is unreadable");
    bool u = c->size_used & 1;
    // A holder that died between writing a header and its footer leaves them unequal; the
    // header wins (it is written first).
    set_size(heap(), off, c->size_used);
    if (u) {
      flush();
      used += size;
      nused++;
    } else {
      if (run_start == NONE64) {
        run_start = off;
        run_size = 0;
      }
      run_size += size;
    }
    off += size;
  }
  flush();
  h->heap_used = used;
  h->heap_chunks_used = nused;
}

uint64_t Seg::alloc(uint64_t n, uint32_t owner) {
  Header* h = hdr();
  if (n > h->heap_size) fail("ENOSPC", "request data of " + std::to_string(n) + " bytes exceeds the heap");
  uint64_t need = align_up(n + CHUNK_HDR + CHUNK_FTR, CHUNK_ALIGN);
  if (need < MIN_CHUNK) need = MIN_CHUNK;
  Guard g{this, &h->heap_lock};
  if (lock(&h->heap_lock)) heap_rebuild();
  for (int attempt = 0; attempt < 2; attempt++) {
    try {
      uint64_t off = h->heap_free_head;
      uint64_t steps = h->heap_size / MIN_CHUNK + 1;
      while (off != NONE64) {
        if (steps-- == 0) corrupt("heap free list loops");
        Chunk* c = chunk_at(off, false);
        if (c == nullptr) corrupt("heap free list entry at " + std::to_string(off));
        uint64_t size = c->size_used;
        if (size >= need) {
          uint64_t at = off;
          if (size - need >= MIN_CHUNK) {
            set_size(heap(), off, size - need);  // stays on the free list, shorter
            at = off + size - need;
          } else {
            free_list_remove(c, off);
            need = size;
          }
          set_size(heap(), at, need | 1);
          Chunk* u = reinterpret_cast<Chunk*>(heap() + at);
          u->next_free = u->prev_free = NONE64;
          u->owner_req = owner;
          h->heap_used += need;
          h->heap_chunks_used++;
          return at + CHUNK_HDR;
        }
        off = c->next_free;
      }
      fail("ENOSPC", "segment heap full: no free chunk of " + std::to_string(need) + " bytes");
    } catch (Error& e) {
      if (!e.corrupt || attempt == 1) throw;
      heap_rebuild();  // rebuild from the boundary tags and try once more
    }
  }
  fail("ENOSPC", "segment heap full");
}

void Seg::free_chunk(uint64_t payload_off) {
  Header* h = hdr();
  if (payload_off < CHUNK_HDR) corrupt("data offset below the heap");
  uint64_t off = payload_off - CHUNK_HDR;
  Guard g{this, &h->heap_lock};
  if (lock(&h->heap_lock)) heap_rebuild();
  Chunk* c = chunk_at(off, true);
  if (c == nullptr) corrupt("freeing a chunk that is not an allocated chunk (offset " + std::to_string(off) + ")");
  uint64_t size = c->size_used & ~1ull;
  h->heap_used -= size;
  h->heap_chunks_used--;
  // next neighbour
  if (off + size < h->heap_size) {
    Chunk* n = chunk_at(off + size, false);
    if (n != nullptr) {
      free_list_remove(n, off + size);
      size += n->size_used;
      n->magic = 0;
    }
  }
  // previous neighbour, through its footer
  if (off >= MIN_CHUNK) {
    uint64_t ptag = *reinterpret_cast<uint64_t*>(heap() + off - CHUNK_FTR);
    if ((ptag & 1) == 0 && ptag >= MIN_CHUNK && ptag <= off) {
      Chunk* p = chunk_at(off - ptag, false);
      if (p != nullptr) {
        free_list_remove(p, off - ptag);
        c->magic = 0;
        off -= ptag;
        size += ptag;
        c = p;
      }
    }
  }
  set_size(heap(), off, size);
  free_list_push(reinterpret_cast<Chunk*>(heap() + off), off);
}

Seg::HeapStats Seg::heap_stats() {
  Header* h = hdr();
  HeapStats s{0, 0, 0, 0, 0};
  Guard g{this, &h->heap_lock};
  if (lock(&h->heap_lock)) heap_rebuild();
  uint64_t off = 0;
  while (off < h->heap_size) {
    Chunk* c = reinterpret_cast<Chunk*>(heap() + off);
    uint64_t size = c->size_used & ~1ull;
    if (c->magic != CHUNK_MAGIC || size < MIN_CHUNK || size % CHUNK_ALIGN || size > h->heap_size - off)
      corrupt("heap chunk at " + std::to_string(off) + " is unreadable");
    if (c->size_used & 1) {
      s.used += size;
      s.used_chunks++;
    } else {
      s.free += size;
      s.free_chunks++;
      if (size > s.largest_free) s.largest_free = size;
    }
    off += size;
  }
  return s;
}

uint8_t* Seg::payload(Req* r, uint64_t* len) const {
  *len = 0;
  if (r->data_off == NONE64) {
    if (r->datalen != 0) corrupt("request has data length but no data");
    return nullptr;
  }
  uint64_t hs = hdr()->heap_size;
  if (r->data_off < CHUNK_HDR || r->data_off % CHUNK_ALIGN || r->data_off > hs || r->data_cap > hs - r->data_off ||
      r->datalen > r->data_cap)
    corrupt("request data offset/length outside the heap");
  Chunk* c = chunk_at(r->data_off - CHUNK_HDR, true);
  if (c == nullptr || (c->size_used & ~1ull) - CHUNK_HDR - CHUNK_FTR < r->data_cap)
    corrupt("request data does not point at an allocated chunk");
  *len = r->datalen;
  return heap() + r->data_off;
}

// ---------------------------------------------------------------------------------------------
// Ports

// The enqueue (under the port lock) happens before the `seq` bump; the owner stores `waiters`
// before it re-reads `seq` (waiter.cc, Waiter::service). With both sides sequentially consistent,
// either the owner sees the new `seq` and drains again, or we see it armed and ring.
void Seg::signal(Port* p) {
  __atomic_add_fetch(&p->seq, 1, __ATOMIC_SEQ_CST);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (__atomic_load_n(&p->waiters, __ATOMIC_SEQ_CST) != 0) {
    uint8_t* base = map_->base + hdr()->ports_off;
    ring(static_cast<uint32_t>((reinterpret_cast<uint8_t*>(p) - base) / sizeof(Port)));
  }
}

std::string Seg::doorbell_dir(const std::string& name) { return "/dev/shm/" + name + ".bell"; }
std::string Seg::doorbell_path(const std::string& name, uint32_t n) {
  return doorbell_dir(name) + "/" + std::to_string(n);
}

// One byte into port n's doorbell. No reader (the owner stopped or died while armed: ENXIO on
// open, EPIPE on write, SIGPIPE is ignored by Node) or a full pipe (EAGAIN: the owner has bytes
// to read already) are not errors: the request is queued either way, and an owner re-checks its
// queues whenever it (re)arms.
void Seg::ring(uint32_t n) {
  auto it = bells_.find(n);
  int fd = it == bells_.end() ? -1 : it->second;
  if (fd < 0) {
    fd = open(doorbell_path(map_->name, n).c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {  // only ever write into a FIFO
      close(fd);
      return;
    }
    bells_[n] = fd;
  }
  uint8_t b = 1;
  if (write(fd, &b, 1) < 0 && errno == EPIPE) {
    close(fd);
    bells_.erase(n);
  }
}

int Seg::open_doorbell(uint32_t n) {
  port(n);
  const std::string& name = map_->name;
  std::string dir = doorbell_dir(name);
  make_doorbell_dir(dir);
  std::string path = doorbell_path(name, n);
  // 0660 whatever the umask: every process of the group rings it.
  if (mkfifo(path.c_str(), 0660) == 0) chmod(path.c_str(), 0660);
  else if (errno != EEXIST) fail("EIO", "mkfifo " + path + ": " + strerror(errno));
  // O_RDWR: the reader also counts as a writer, so the FIFO never reports hang-up while peers
  // come and go (Linux allows O_RDWR on a FIFO).
  int fd = open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail("EIO", "open " + path + ": " + strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
    close(fd);
    fail("EIO", path + " is not a FIFO");
  }
  return fd;
}

bool Seg::has_work(uint32_t n) const {
  Port* p = port(n);
  return __atomic_load_n(&p->rq.count, __ATOMIC_SEQ_CST) != 0 || __atomic_load_n(&p->pq.count, __ATOMIC_SEQ_CST) != 0;
}

// Under the segment lock: port p is ours now, not armed (we are not waiting on it yet).
void Seg::claim(Port* p, uint32_t flags) {
  p->owner_pid = self_pid();
  p->flags = PF_BOUND | flags;
  p->binds++;
  __atomic_store_n(&p->waiters, 0u, __ATOMIC_SEQ_CST);
}

void Seg::bind(uint32_t n, bool dynamic, Recovered* rec) {
  Header* h = hdr();
  Port* p = port(n);
  if (!dynamic && n >= h->dynports)
    fail("EINVAL", "port " + std::to_string(n) + " is dynamic (static ports are 0.." + std::to_string(h->dynports) + ")");
  uint32_t self = self_pid();
  bool previous;
  {
    Guard g{this, &h->seg_lock};
    lock(&h->seg_lock);
    if (p->owner_pid != 0 && p->owner_pid != self && pid_alive(p->owner_pid))
      fail("EBUSY", "port " + std::to_string(n) + " is bound by live pid " + std::to_string(p->owner_pid));
    previous = p->binds != 0 && p->owner_pid != self;
    claim(p, dynamic ? uint32_t(PF_DYNAMIC) : 0u);
  }
  // Automatic recovery: a previous incarnation may have died with accepted requests.
  if (previous) *rec = recover_port(n, true);
}

uint32_t Seg::bind_dynamic(Recovered* rec) {
  Header* h = hdr();
  uint32_t found = NONE;
  bool previous = false;
  {
    Guard g{this, &h->seg_lock};
    lock(&h->seg_lock);
    for (uint32_t n = h->dynports; n < h->nr_ports; n++) {
      Port* p = port(n);
      if (!(p->flags & PF_BOUND) || p->owner_pid == 0 || !pid_alive(p->owner_pid)) {
        previous = p->binds != 0;
        claim(p, PF_DYNAMIC);
        found = n;
        break;
      }
    }
  }
  if (found == NONE) fail("EBUSY", "no free dynamic port");
  if (previous) *rec = recover_port(found, true);
  return found;
}

void Seg::leave(uint32_t n) {
  Header* h = hdr();
  Port* p = port(n);
  bool dyn;
  {
    Guard g{this, &h->seg_lock};
    lock(&h->seg_lock);
    if (p->owner_pid != self_pid()) return;
    dyn = p->flags & PF_DYNAMIC;
    p->owner_pid = 0;
    // A static port stays "bound" so requests keep queueing for the peer's next incarnation.
    if (dyn) p->flags = 0;
  }
  if (dyn) recover_port(n, true);
}

void Seg::pool_put(uint32_t idx) {
  Header* h = hdr();
  Guard g{this, &h->seg_lock};
  lock(&h->seg_lock);
  if (h->pool.count > h->nr_reqs) list_repair(&h->pool, LOC_POOL, NONE);
  list_push_head(&h->pool, idx, LOC_POOL, NONE);
}

void Seg::fail_back(Req* r, uint32_t idx, std::vector<Error>* errors) {
  r->state = 0x2;  // XS_FAILED
  r->serviced = 0;
  r->accepter_pid = 0;
  uint32_t src = r->src;
  if (src < hdr()->nr_ports) {
    enqueue(src, &Port::pq, LOC_PQ, idx);
    return;
  }
  // Nowhere to send it: reclaim it.
  if (errors) errors->push_back(Error{"EIO", "request " + std::to_string(idx) + " has no valid sender; reclaimed", true});
  reclaim(idx);
}

void Seg::drop_data(Req* r) {
  uint64_t len;
  try {
    if (payload(r, &len) != nullptr) free_chunk(r->data_off);
  } catch (Error&) {
  }
  r->data_off = NONE64;
  r->datalen = r->data_cap = 0;
}

void Seg::reclaim(uint32_t idx) {
  Req* r = raw_req(this, idx);
  drop_data(r);
  r->gen++;
  pool_put(idx);
}

Recovered Seg::recover_port(uint32_t n, bool force) {
  Header* h = hdr();
  Port* p = port(n);
  uint32_t self = self_pid();
  if (!force && p->owner_pid != 0 && p->owner_pid != self && pid_alive(p->owner_pid))
    fail("EBUSY", "port " + std::to_string(n) + " is bound by live pid " + std::to_string(p->owner_pid) +
                      " (stop that peer first)");
  Recovered out;
  std::vector<uint32_t> to_fail, to_free;
  std::vector<uint8_t> in_rq(h->nr_reqs, 0);
  {
    Guard g{this, &p->lock};
    lock_port(p, n);
    repair_queues(p, n);
    for (uint32_t cur = p->rq.head, k = 0; cur != NONE && k < p->rq.count; k++) {
      in_rq[cur] = 1;
      cur = raw_req(this, cur)->next;
    }
    for (uint32_t i = 0; i < h->nr_reqs; i++) {
      Req* r = raw_req(this, i);
      if (r == nullptr || r->loc_port != n) continue;
      if (r->loc == LOC_ACCEPTED || (r->loc == LOC_RQ && !in_rq[i])) to_fail.push_back(i);
      else if (r->loc == LOC_HELD || r->loc == LOC_PQ || r->loc == LOC_FQ) to_free.push_back(i);
    }
    p->pq = List{NONE, NONE, 0, 0};
    p->fq = List{NONE, NONE, 0, 0};
    p->alloc_reqs = 0;
  }
  for (uint32_t i : to_fail) {
    Req* r = raw_req(this, i);
    // A request that was in transit to its sender counts as "held" by nobody now.
    fail_back(r, i, nullptr);
    out.failed++;
  }
  for (uint32_t i : to_free) {
    reclaim(i);
    out.freed++;
  }
  return out;
}

uint32_t Seg::recover_locks(uint32_t pid) {
  Header* h = hdr();
  if (pid == 0) fail("EINVAL", "pid must be a positive integer");
  if (pid_alive(pid)) fail("EBUSY", "pid " + std::to_string(pid) + " is alive; its locks are not stale");
  uint32_t n = 0;
  if (h->seg_lock.owner_pid == pid) {
    lock(&h->seg_lock);
    unlock(&h->seg_lock);
    n++;
  }
  if (h->heap_lock.owner_pid == pid) {
    lock(&h->heap_lock);
    heap_rebuild();
    unlock(&h->heap_lock);
    n++;
  }
  for (uint32_t i = 0; i < h->nr_ports; i++) {
    Port* p = port(i);
    if (p->lock.owner_pid != pid) continue;
    lock_port(p, i);
    repair_queues(p, i);
    unlock(&p->lock);
    n++;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Requests

uint32_t Seg::get_request(uint32_t src) {
  Header* h = hdr();
  Port* p = port(src);
  uint32_t idx = NONE;
  {
    Guard g{this, &p->lock};
    lock_port(p, src);
    try {
      idx = list_pop(&p->fq, LOC_FQ, src);
    } catch (Error&) {
      idx = NONE;
    }
    if (idx == NONE) {
      Guard g2{this, &h->seg_lock};
      lock(&h->seg_lock);
      try {
        idx = list_pop(&h->pool, LOC_POOL, NONE);
      } catch (Error&) {
        idx = list_pop(&h->pool, LOC_POOL, NONE);
      }
    }
    if (idx == NONE) fail("ENOSPC", "request pool exhausted (" + std::to_string(h->nr_reqs) + " requests in use)");
    p->alloc_reqs++;
  }
  Req* r = req(idx);
  r->loc = LOC_HELD;
  r->loc_port = src;
  r->src = r->dst = r->transit = src;
  r->op = r->flags = r->state = 0;
  r->offset = r->size = r->serviced = 0;
  r->targetlen = 0;
  r->accepter_pid = 0;
  drop_data(r);
  return idx;
}

void Seg::prep(uint32_t idx, uint64_t datalen) {
  Req* r = req(idx);
  if (r->data_off != NONE64 && r->data_cap >= datalen) {
    r->datalen = datalen;
    return;
  }
  if (r->data_off != NONE64) {
    free_chunk(r->data_off);
    r->data_off = NONE64;
    r->datalen = r->data_cap = 0;
  }
  if (datalen == 0) return;
  r->data_off = alloc(datalen, idx);
  r->data_cap = datalen;
  r->datalen = datalen;
}

void Seg::put_request(uint32_t src, uint32_t idx) {
  Req* r = req(idx);
  if (r->loc != LOC_HELD || r->loc_port != src) fail("EINVAL", "request is not held by port " + std::to_string(src));
  drop_data(r);
  r->gen++;
  Port* p = port(src);
  {
    Guard g{this, &p->lock};
    lock_port(p, src);
    if (p->alloc_reqs) p->alloc_reqs--;
    if (p->fq.count < FQ_MAX) {
      list_push_head(&p->fq, idx, LOC_FQ, src);
      return;
    }
  }
  pool_put(idx);
}

// Appends request idx to queue `q` of port n (its entries are at `loc`) and signals the port.
void Seg::enqueue(uint32_t n, List Port::*q, uint32_t loc, uint32_t idx) {
  Port* p = port(n);
  {
    Guard g{this, &p->lock};
    lock_port(p, n);
    list_push_tail(&(p->*q), idx, loc, n);
  }
  signal(p);
}

// Pops the head of queue `q` of port n (entries at `loc`) and marks it `to`, port n's, under the
// port lock; NONE when the queue is empty. A bad link truncates the queue (list_pop), is
// reported in `errors`, and the pop goes on with what is left.
uint32_t Seg::dequeue(uint32_t n, List Port::*q, uint32_t loc, uint32_t to, std::vector<Error>* errors) {
  Port* p = port(n);
  for (;;) {
    Guard g{this, &p->lock};
    lock_port(p, n);
    uint32_t idx;
    try {
      idx = list_pop(&(p->*q), loc, n);
    } catch (Error& e) {
      errors->push_back(e);
      continue;
    }
    if (idx == NONE) return NONE;
    Req* r = req(idx);
    r->loc = to;
    r->loc_port = n;
    if (to == LOC_ACCEPTED) {
      r->transit = n;
      r->accepter_pid = self_pid();
    }
    return idx;
  }
}

void Seg::submit(uint32_t idx) {
  Req* r = req(idx);
  uint32_t dst = r->dst;
  if (!(port(dst)->flags & PF_BOUND)) fail("EINVAL", "port " + std::to_string(dst) + " is not bound");
  enqueue(dst, &Port::rq, LOC_RQ, idx);
}

static std::string validate(const Seg* s, Req* r) {
  if (r->targetlen > MAX_TARGET) return "target length " + std::to_string(r->targetlen) + " over " + std::to_string(MAX_TARGET);
  if (r->src >= s->hdr()->nr_ports) return "source port " + std::to_string(r->src) + " out of range";
  if (r->dst >= s->hdr()->nr_ports) return "destination port out of range";
  try {
    uint64_t len;
    s->payload(r, &len);
  } catch (Error& e) {
    return e.message;
  }
  return "";
}

uint32_t Seg::accept(uint32_t n, std::vector<Error>* errors) {
  for (;;) {
    uint32_t idx = dequeue(n, &Port::rq, LOC_RQ, LOC_ACCEPTED, errors);
    if (idx == NONE) return NONE;
    Req* r = req(idx);
    std::string bad = validate(this, r);
    if (bad.empty()) return idx;
    errors->push_back(Error{"EIO", "segment corrupt: request " + std::to_string(idx) + ": " + bad + " (failed back)", true});
    fail_back(r, idx, errors);
  }
}

uint32_t Seg::receive(uint32_t n, std::vector<Error>* errors) {
  return dequeue(n, &Port::pq, LOC_PQ, LOC_HELD, errors);
}

void Seg::respond(uint32_t n, uint32_t idx) {
  Req* r = req(idx);
  if (r->loc != LOC_ACCEPTED || r->loc_port != n)
    fail("EINVAL", "request was not accepted by port " + std::to_string(n) + " (already answered?)");
  r->accepter_pid = 0;
  enqueue(r->src, &Port::pq, LOC_PQ, idx);
}

}  // namespace xseg
