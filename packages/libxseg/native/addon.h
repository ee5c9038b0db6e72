// The addon's per-environment state. Node.js may load this addon into several environments of
// one process (the main thread and each worker_thread); each gets its own XsegAddon, held as
// node-addon-api instance data and freed with the environment, so nothing JavaScript-side (a
// class constructor, a reference) is ever shared between environments or outlives its own.
#pragma once
#include <napi.h>

namespace xseg {

class XsegAddon : public Napi::Addon<XsegAddon> {
 public:
  // The module's exports: { NativeSegment, VERSION }.
  XsegAddon(Napi::Env env, Napi::Object exports);

  // This environment's NativeSegment class; create() and join() construct through it.
  static Napi::FunctionReference& segment_class(Napi::Env env) {
    return env.GetInstanceData<XsegAddon>()->segment_class_;
  }

 private:
  Napi::FunctionReference segment_class_;
};

// The NativeSegment class, defined for `env` (segment_wrap.cc).
Napi::Function DefineNativeSegment(Napi::Env env);

}  // namespace xseg
