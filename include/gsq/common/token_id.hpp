// gsq/common/token_id.hpp -- the type of a token id, shared by the tokenizer and the network.
#pragma once

#include <cstdint>

namespace gsq {

using TokenId = std::uint32_t;

}  // namespace gsq
