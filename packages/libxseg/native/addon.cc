// Module entry of the segment addon: the segment core (segment.cc, no Node-API), the waiter
// (waiter.cc: doorbell, spins, the JS drain) and the NativeSegment wrapper (segment_wrap.cc)
// are put together here, once per environment (addon.h).
#include "addon.h"

#include "layout.h"

namespace xseg {

XsegAddon::XsegAddon(Napi::Env env, Napi::Object exports) {
  Napi::Function segment = DefineNativeSegment(env);
  segment_class_ = Napi::Persistent(segment);
  DefineAddon(exports, {
                           InstanceValue("NativeSegment", segment, napi_default_jsproperty),
                           InstanceValue("VERSION", Napi::Number::New(env, VERSION), napi_default_jsproperty),
                       });
}

}  // namespace xseg

using xseg::XsegAddon;
NODE_API_ADDON(XsegAddon)
