// libFuzzer target for the safetensors reader (gsq/io/safetensors.hpp): the input bytes are parsed
// as a safetensors file held in memory. Rejection with gsq::Error is the expected outcome for bad
// input; a crash, undefined behaviour, a leak, a huge allocation or any other exception is a
// finding. An accepted file must also read completely and survive a rewrite unchanged. Each input
// is tried twice: as it is, and as header text with the length prefix computed.
// Build and run it with tests/fuzz/run.sh.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include <gsq/io/safetensors.hpp>

namespace {

bool same_bytes(const gsq::ByteView& a, const gsq::ByteView& b) {
  return a.size == b.size && (a.size == 0 || std::memcmp(a.data, b.data, a.size) == 0);
}

/// Reads every tensor of an accepted file the ways gsq offers.
void read_everything(const gsq::SafetensorsFile& file) {
  for (const gsq::TensorInfo& tensor : file.tensors()) {
    if (gsq::is_float_dtype(tensor.dtype)) {
      if (file.float_values(tensor.name).size() != tensor.element_count()) std::abort();
      if (tensor.shape.size() == 2) (void)file.matrix(tensor.name);
    }
    if (gsq::is_integer_dtype(tensor.dtype)) {
      try {
        (void)file.integer_values(tensor.name);
      } catch (const gsq::Error&) {  // legitimate only for a U64 value beyond int64
        if (tensor.dtype != gsq::Dtype::U64) std::abort();
      }
    }
  }
}

/// Rewrites an accepted file with gsq's writer and checks the result reads back the same.
void check_rewrite(const gsq::SafetensorsFile& file) {
  gsq::SafetensorsWriter writer;
  for (const auto& [key, value] : file.metadata()) writer.set_metadata(key, value);
  for (const gsq::TensorInfo& tensor : file.tensors()) {
    const gsq::ByteView bytes = file.raw_bytes(tensor.name);
    writer.add_bytes(tensor.name, tensor.dtype, tensor.shape, std::vector<std::uint8_t>(bytes.data, bytes.data + bytes.size));
  }
  const std::vector<std::uint8_t> rewritten = writer.to_bytes();
  const gsq::SafetensorsFile reread = gsq::SafetensorsFile::from_bytes(rewritten.data(), rewritten.size(), "<rewrite>");
  if (reread.metadata() != file.metadata() || reread.tensors().size() != file.tensors().size()) std::abort();
  for (const gsq::TensorInfo& tensor : file.tensors()) {
    const gsq::TensorInfo& copy = reread.info(tensor.name);
    if (copy.dtype != tensor.dtype || copy.shape != tensor.shape) std::abort();
    if (!same_bytes(reread.raw_bytes(tensor.name), file.raw_bytes(tensor.name))) std::abort();
  }
}

void fuzz_file(const std::uint8_t* data, std::size_t size) {
  std::optional<gsq::SafetensorsFile> file;
  try {
    file = gsq::SafetensorsFile::from_bytes(data, size, "<fuzz input>");
  } catch (const gsq::Error&) {
    return;
  }
  read_everything(*file);
  check_rewrite(*file);  // a gsq::Error escaping from here is a finding too
}

/// The input read as header text up to its last '}' and data after it, behind a header length
/// that fits: mutations that grow or shrink the JSON then still reach the checks behind the parse.
std::vector<std::uint8_t> with_fitting_header_length(const std::uint8_t* data, std::size_t size) {
  std::size_t header_size = size;
  while (header_size > 0 && data[header_size - 1] != '}') --header_size;
  std::vector<std::uint8_t> file(8 + size);
  for (std::size_t i = 0; i < 8; ++i) file[i] = static_cast<std::uint8_t>(std::uint64_t(header_size) >> (8 * i));
  if (size > 0) std::memcpy(file.data() + 8, data, size);
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz_file(data, size);
  const std::vector<std::uint8_t> fitted = with_fitting_header_length(data, size);
  fuzz_file(fitted.data(), fitted.size());
  return 0;
}
