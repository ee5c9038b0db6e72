// Pool: one rados_ioctx_t. Completions of aio calls come back to the JS thread through one
// threadsafe function per pool, which holds the event loop open only while calls are in flight.
#include "common.h"

namespace archip {

Napi::Function Pool::Init(Napi::Env env) {
  Napi::Function f = DefineClass(
      env, "Pool",
      {InstanceMethod<&Pool::Read>("read"), InstanceMethod<&Pool::Write>("write"),
       InstanceMethod<&Pool::WriteFull>("writeFull"),
       InstanceMethod<&Pool::WriteExtents>("writeExtents"), InstanceMethod<&Pool::Create>("create"),
       InstanceMethod<&Pool::Remove>("remove"), InstanceMethod<&Pool::Stat>("stat"),
       InstanceMethod<&Pool::WriteOp>("writeOp"), InstanceMethod<&Pool::ReadOp>("readOp"),
       InstanceMethod<&Pool::WatchObject>("watch"), InstanceMethod<&Pool::Unwatch>("unwatch"),
       InstanceMethod<&Pool::Notify>("notify"), InstanceMethod<&Pool::ListOpen>("listOpen"),
       InstanceMethod<&Pool::ListNext>("listNext"),
       InstanceMethod<&Pool::ListClose>("listClose"), InstanceMethod<&Pool::Close>("close"),
       InstanceMethod<&Pool::Pending>("pending")});
  return f;
}

// new Pool(cluster, External<ioctx>): only Cluster.openPool makes these.
Pool::Pool(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Pool>(info) {
  Napi::Env env = info.Env();
  if (!Usage(info, info[0].IsObject() && info[1].IsExternal(), "Pool objects come from Cluster.openPool")) return;
  Cluster* c = Cluster::Unwrap(info[0].As<Napi::Object>());
  clusterRef_ = Napi::Persistent(info[0].As<Napi::Object>());
  cluster_ = c->handle();
  io_ = static_cast<rados_ioctx_t>(info[1].As<Napi::External<void>>().Data());
  tsfn_ = AioTsfn::New(env, "archip:rados:aio", 0, 1, nullptr);
  tsfn_.Unref(env);
  tsfnLive_ = true;
}

Pool::~Pool() {
  // close() is the normal path; a Pool collected without it only loses its context.
  for (auto& kv : lists_) rados_nobjects_list_close(kv.second);
  lists_.clear();
}

bool Pool::Check(const Napi::CallbackInfo& info) {
  if (io_ == nullptr) {
    Napi::Error e = Napi::Error::New(info.Env(), "the pool is closed");
    e.Set("code", Napi::String::New(info.Env(), "ECLOSED"));
    e.ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

void Pool::OpDone(Napi::Env env) {
  if (pending_ > 0 && --pending_ == 0 && tsfnLive_) tsfn_.Unref(env);
}

Napi::Value Pool::Pending(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), pending_);
}

static void OnComplete(rados_completion_t, void* arg) {
  AioOp* op = static_cast<AioOp*>(arg);
  // Runs on a librados thread: hand the op to the JS thread (the queue is unbounded).
  op->pool->tsfn_for_callback().NonBlockingCall(op);
}

void CallAio(Napi::Env env, Napi::Function, std::nullptr_t*, AioOp* op) {
  std::unique_ptr<AioOp> own(op);
  int rc = rados_aio_get_return_value(op->completion);
  rados_aio_release(op->completion);
  if (op->writeOp != nullptr) rados_release_write_op(op->writeOp);
  if (env == nullptr) return;  // the environment is going away
  Napi::HandleScope scope(env);
  op->pool->OpDone(env);
  if (rc < 0) {
    op->deferred.Reject(ErrnoError(env, -rc, op->What()).Value());
    return;
  }
  switch (op->kind) {
    case AioOp::kLength:
      op->deferred.Resolve(Napi::Number::New(env, rc));
      break;
    case AioOp::kStat: {
      Napi::Object o = Napi::Object::New(env);
      o.Set("size", Napi::Number::New(env, static_cast<double>(op->size)));
      o.Set("mtime", Napi::Number::New(env, static_cast<double>(op->mtime)));
      op->deferred.Resolve(o);
      break;
    }
    default:
      op->deferred.Resolve(env.Undefined());
  }
}

int Pool::Prepare(AioOp* op) {
  op->pool = this;
  int rc = rados_aio_create_completion2(op, OnComplete, &op->completion);
  if (rc < 0) {
    op->completion = nullptr;
    op->call = "rados_aio_create_completion2";
  }
  return rc;
}

Napi::Value Pool::Started(Napi::Env env, std::unique_ptr<AioOp> op, int rc) {
  if (rc < 0) {
    if (op->completion != nullptr) rados_aio_release(op->completion);
    if (op->writeOp != nullptr) rados_release_write_op(op->writeOp);
    op->deferred.Reject(ErrnoError(env, -rc, op->What()).Value());
    return op->deferred.Promise();
  }
  if (pending_++ == 0) tsfn_.Ref(env);
  Napi::Promise p = op->deferred.Promise();
  op.release();  // owned by the completion now; CallAio frees it
  return p;
}

// close() -> Promise<void>: waits for aio in flight, drops watches and listings, destroys the ioctx.
Napi::Value Pool::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rados_ioctx_t io = io_;
  if (io == nullptr) return RunAsync(env, Value(), "rados_ioctx_destroy", []() { return 0; });
  io_ = nullptr;
  std::vector<uint64_t> handles;
  for (auto& kv : watches_) handles.push_back(kv.second->handle);
  for (auto& kv : lists_) rados_nobjects_list_close(kv.second);
  lists_.clear();
  rados_t c = cluster_;
  return RunAsync(
      env, Value(), "rados_ioctx_destroy",
      [io, c, handles]() -> int {
        rados_aio_flush(io);
        for (uint64_t h : handles) rados_unwatch2(io, h);
        if (!handles.empty()) rados_watch_flush(c);
        return 0;
      },
      [this, io](Napi::Env e) -> Napi::Value {
        // Every callback has run: pending ops were flushed, watches flushed.
        for (auto& kv : watches_) ReleaseWatch(kv.second);
        watches_.clear();
        rados_ioctx_destroy(io);
        if (tsfnLive_) {
          tsfnLive_ = false;
          tsfn_.Release();
        }
        return e.Undefined();
      });
}

}  // namespace archip
