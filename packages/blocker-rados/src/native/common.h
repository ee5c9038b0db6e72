// Shared declarations of the librados binding. Everything is compiled as one translation unit
// (unity.cc), so the classes below are defined in their own .cc files and included once.
#pragma once
#include <napi.h>
#include <rados/librados.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace archip {

// An Error with `errno` (positive) and `syscall` naming the librados call: the TypeScript facade
// maps it to an ArchipelagoError code.
Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what);

// Whether a call's arguments fit (`ok`); when they do not, a TypeError with the call's usage is
// thrown into JavaScript and the caller returns undefined.
bool Usage(const Napi::CallbackInfo& info, bool ok, const char* usage);

// What every JavaScript-facing method of the classes below is.
using JsMethod = Napi::Value(const Napi::CallbackInfo& info);

// Runs `work` on a libuv worker thread and settles a promise on the JS thread: rejected with
// ErrnoError when work returns a negative errno, else resolved with `result(env)`.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<int()>;
  using Result = std::function<Napi::Value(Napi::Env)>;
  PromiseWorker(Napi::Env env, Napi::Object keep, std::string what, Work work, Result result);
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override;
  void OnOK() override;

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference keep_;
  std::string what_;
  Work work_;
  Result result_;
  int rc_ = 0;
};

// Queues a PromiseWorker and returns its promise.
Napi::Value RunAsync(Napi::Env env, Napi::Object keep, std::string what, PromiseWorker::Work work,
                     PromiseWorker::Result result = nullptr);

class Cluster;
class Pool;

// The binding's state in one environment (node-addon-api instance data): the main thread and
// every worker that loads the binding get their own, freed with the environment.
struct AddonData {
  Napi::FunctionReference pool;  // Pool's constructor: Cluster.openPool makes pools with it
};
struct AioOp;
struct Watch;

void CallAio(Napi::Env env, Napi::Function, std::nullptr_t*, AioOp* op);
using AioTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, AioOp, CallAio>;

// A connected librados client (rados_t).
class Cluster : public Napi::ObjectWrap<Cluster> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Cluster(const Napi::CallbackInfo& info);
  rados_t handle() const { return cluster_; }

 private:
  JsMethod Connect, OpenPool, Shutdown, InstanceId, WaitForLatestOsdmap, Addrs, BlocklistAdd;
  rados_t cluster_ = nullptr;
  bool connected_ = false;
};

// An I/O context on one pool: aio object calls, locks, watch/notify, listing.
class Pool : public Napi::ObjectWrap<Pool> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Pool(const Napi::CallbackInfo& info);
  ~Pool() override;
  rados_ioctx_t io() const { return io_; }
  // Called on the JS thread when an aio op completes.
  void OpDone(Napi::Env env);
  AioTsfn& tsfn_for_callback() { return tsfn_; }

 private:
  bool Check(const Napi::CallbackInfo& info);
  // Starts one aio call: makes its completion, runs `start(completion)` (the rados_aio_* call) and
  // returns the op's promise. A template, so the per-call lambda needs no std::function allocation.
  template <typename Start>
  Napi::Value Submit(const Napi::CallbackInfo& info, std::unique_ptr<AioOp> op, Start&& start);
  int Prepare(AioOp* op);
  Napi::Value Started(Napi::Env env, std::unique_ptr<AioOp> op, int rc);
  // aio.cc
  JsMethod Read, Write, WriteFull, WriteExtents, Create, Remove, Stat;
  Napi::Value Transfer(const Napi::CallbackInfo& info, bool read);
  Napi::Value Operate(const Napi::CallbackInfo& info, std::unique_ptr<AioOp> op);
  // ops.cc
  JsMethod WriteOp, ReadOp;
  template <typename Run>
  Napi::Value CompoundOp(const Napi::CallbackInfo& info, bool write, const char* usage, const char* call,
                         Run run);
  // watch.cc
  JsMethod WatchObject, Unwatch, Notify;
  // list.cc
  JsMethod ListOpen, ListNext, ListClose;
  // pool.cc
  JsMethod Close, Pending;

  rados_ioctx_t io_ = nullptr;
  rados_t cluster_ = nullptr;
  Napi::ObjectReference clusterRef_;
  AioTsfn tsfn_;
  bool tsfnLive_ = false;
  uint32_t pending_ = 0;
  uint32_t nextId_ = 1;
  std::map<uint32_t, Watch*> watches_;
  std::map<uint32_t, rados_list_ctx_t> lists_;
};

// One asynchronous librados call in flight.
struct AioOp {
  Pool* pool = nullptr;
  Napi::Promise::Deferred deferred;
  Napi::Reference<Napi::Value> keep;  // the Buffer librados reads from or writes into
  rados_completion_t completion = nullptr;
  rados_write_op_t writeOp = nullptr;
  const char* call = "";  // the librados call, for the error message (built only on failure)
  std::string oid;
  std::string What() const { return std::string(call) + " " + oid; }
  enum Kind { kLength, kVoid, kStat } kind = kVoid;
  uint64_t size = 0;
  time_t mtime = 0;
  explicit AioOp(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

// One registered watch: notifies reach `tsfn`, which calls the JS callback with (undefined, the
// notify's payload as a Buffer) or with a negative errno (the watch broke and must be re-established).
struct Watch {
  Pool* pool = nullptr;
  rados_ioctx_t io = nullptr;
  std::string oid;
  uint64_t handle = 0;
  Napi::ThreadSafeFunction tsfn;
};
void ReleaseWatch(Watch* w);

template <typename Start>
Napi::Value Pool::Submit(const Napi::CallbackInfo& info, std::unique_ptr<AioOp> op, Start&& start) {
  int rc = Prepare(op.get());
  if (rc == 0) rc = start(op->completion);
  return Started(info.Env(), std::move(op), rc);
}

}  // namespace archip
