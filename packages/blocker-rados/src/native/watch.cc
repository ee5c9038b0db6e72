// Watch/notify on lock objects: waiting acquires and release watchers (watchRelease) watch the
// lock object; a releaser and a requester of a release notify it, each with its own payload.
// Notifies arrive on a librados thread, are acknowledged there at once, and reach JS (with a copy
// of their payload) through a threadsafe function.
#include "common.h"

namespace archip {

namespace {
void OnNotify(void* arg, uint64_t notify_id, uint64_t handle, uint64_t, void* data, size_t len) {
  Watch* w = static_cast<Watch*>(arg);
  rados_notify_ack(w->io, w->oid.c_str(), notify_id, handle, nullptr, 0);
  std::string payload = len > 0 && data != nullptr ? std::string(static_cast<const char*>(data), len) : std::string();
  w->tsfn.NonBlockingCall([payload](Napi::Env env, Napi::Function cb) {
    cb.Call({env.Undefined(), Napi::Buffer<char>::Copy(env, payload.data(), payload.size())});
  });
}
void OnWatchError(void* arg, uint64_t, int err) {
  Watch* w = static_cast<Watch*>(arg);
  w->tsfn.NonBlockingCall([err](Napi::Env env, Napi::Function cb) {
    cb.Call({Napi::Number::New(env, err)});
  });
}
}  // namespace

void ReleaseWatch(Watch* w) {
  w->tsfn.Release();
  delete w;
}

// watch(oid, callback) -> Promise<id>; callback(undefined, payload: Buffer) on every notify
// (acknowledged already; an empty Buffer for a notify without payload), callback(-errno) when the
// watch breaks (unwatch it and watch again). The watch does not keep the process alive.
Napi::Value Pool::WatchObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Check(info) || !Usage(info, info[0].IsString() && info[1].IsFunction(), "watch(oid, callback)"))
    return env.Undefined();
  auto* w = new Watch();
  w->pool = this;
  w->io = io_;
  w->oid = info[0].As<Napi::String>().Utf8Value();
  w->tsfn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "archip:rados:watch", 0, 1);
  w->tsfn.Unref(env);
  uint32_t id = nextId_++;
  rados_ioctx_t io = io_;
  return RunAsync(
      env, Value(), "rados_watch2 " + w->oid,
      [io, w]() -> int {
        int r = rados_watch2(io, w->oid.c_str(), &w->handle, OnNotify, OnWatchError, w);
        if (r < 0) ReleaseWatch(w);  // napi_release_threadsafe_function is thread-safe
        return r;
      },
      [this, w, id](Napi::Env e) -> Napi::Value {
        if (io_ == nullptr) {  // closed meanwhile: drop it
          rados_ioctx_t io = w->io;
          uint64_t h = w->handle;
          rados_unwatch2(io, h);
          ReleaseWatch(w);
          return e.Null();
        }
        watches_[id] = w;
        return Napi::Number::New(e, id);
      });
}

// unwatch(id) -> Promise<void>
Napi::Value Pool::Unwatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Usage(info, info[0].IsNumber(), "unwatch(id)")) return env.Undefined();
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  auto it = watches_.find(id);
  if (it == watches_.end() || io_ == nullptr) return RunAsync(env, Value(), "rados_unwatch2", []() { return 0; });
  Watch* w = it->second;
  watches_.erase(it);
  rados_t c = cluster_;
  return RunAsync(
      env, Value(), "rados_unwatch2 " + w->oid,
      [w, c]() -> int {
        int r = rados_unwatch2(w->io, w->handle);
        rados_watch_flush(c);  // no callback of this watch runs after this
        return r == -ENOENT || r == -ENOTCONN ? 0 : r;
      },
      [w](Napi::Env e) -> Napi::Value {
        ReleaseWatch(w);
        return e.Undefined();
      });
}

// notify(oid, timeoutMs, payload?: Uint8Array) -> Promise<boolean>: false when the object does not
// exist. Resolves once every watcher acknowledged it or `timeoutMs` passed (a watcher that did not
// ack in time still got it or is gone). The payload (copied at the call) reaches every watcher.
Napi::Value Pool::Notify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Check(info) ||
      !Usage(info,
             info[0].IsString() && info[1].IsNumber() && (info[2].IsUndefined() || info[2].IsTypedArray()),
             "notify(oid, timeoutMs, payload?)"))
    return env.Undefined();
  std::string oid = info[0].As<Napi::String>().Utf8Value();
  uint64_t timeout = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
  std::string payload;
  if (info[2].IsTypedArray()) {
    Napi::TypedArray t = info[2].As<Napi::TypedArray>();
    Napi::ArrayBuffer ab = t.ArrayBuffer();
    payload.assign(static_cast<const char*>(ab.Data()) + t.ByteOffset(), t.ByteLength());
  }
  rados_ioctx_t io = io_;
  auto found = std::make_shared<bool>(true);
  return RunAsync(
      env, Value(), "rados_notify2 " + oid,
      [io, oid, timeout, found, payload]() -> int {
        char* reply = nullptr;
        size_t replyLen = 0;
        int r = rados_notify2(io, oid.c_str(), payload.empty() ? nullptr : payload.data(), payload.size(),
                              timeout, &reply, &replyLen);
        if (reply != nullptr) rados_buffer_free(reply);
        if (r == -ENOENT) {
          *found = false;
          return 0;
        }
        return r == -ETIMEDOUT ? 0 : r;  // a watcher that did not ack in time still got it or is gone
      },
      [found](Napi::Env e) -> Napi::Value { return Napi::Boolean::New(e, *found); });
}

}  // namespace archip
