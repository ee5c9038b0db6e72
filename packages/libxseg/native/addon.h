// The addon's per-environment state. Node.js may load this addon into several environments of
// one process (the main thread and each worker_thread); each gets its own XsegAddon, held as
// node-addon-api instance data and freed with the environment, so nothing JavaScript-side (a
// class constructor, a reference) is ever shared between environments or outlives its own.
#pragma once

// A worker being terminated may still call into the addon for a moment, and every Node-API
// call then fails; with C++ exceptions on, node-addon-api would turn the failure into an
// exception it cannot throw into JavaScript and end the whole process (std::terminate). This
// makes it drop such an exception instead: the environment is going away anyway. Every source
// that includes napi.h includes this header first.
#ifndef NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#define NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#endif
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
