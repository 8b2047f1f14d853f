// gsq/pipeline/method.hpp -- the three ways gsq quantizes a linear layer, by name: RTN, GPTQ, GSQ.
#pragma once

#include <string>

#include "gsq/common/error.hpp"

namespace gsq {

/// What quantizes a layer: RTN, GPTQ or GSQ.
enum class Method { rtn, gptq, gsq };

inline const char* method_name(Method method) {
  return method == Method::rtn ? "rtn" : method == Method::gptq ? "gptq" : "gsq";
}

inline Method parse_method(const std::string& name) {
  for (Method method : {Method::rtn, Method::gptq, Method::gsq})
    if (name == method_name(method)) return method;
  throw Error("unknown method '" + name + "' (expected rtn, gptq or gsq)");
}

}  // namespace gsq
