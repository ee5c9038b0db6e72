// Errors and the promise-returning worker used for the blocking librados calls.
#include "common.h"

namespace archip {

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what) {
  std::string msg = what + ": " + std::strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, what));
  return e;
}

bool Usage(const Napi::CallbackInfo& info, bool ok, const char* usage) {
  if (!ok) Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
  return ok;
}

PromiseWorker::PromiseWorker(Napi::Env env, Napi::Object keep, std::string what, Work work,
                             Result result)
    : Napi::AsyncWorker(env, "archip:rados"),
      deferred_(Napi::Promise::Deferred::New(env)),
      keep_(Napi::Persistent(keep)),
      what_(std::move(what)),
      work_(std::move(work)),
      result_(std::move(result)) {}

void PromiseWorker::Execute() { rc_ = work_(); }

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  if (rc_ < 0) {
    deferred_.Reject(ErrnoError(env, -rc_, what_).Value());
  } else if (result_) {
    deferred_.Resolve(result_(env));
  } else {
    deferred_.Resolve(Napi::Number::New(env, rc_));
  }
}

Napi::Value RunAsync(Napi::Env env, Napi::Object keep, std::string what, PromiseWorker::Work work,
                     PromiseWorker::Result result) {
  auto* w = new PromiseWorker(env, keep, std::move(what), std::move(work), std::move(result));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace archip
