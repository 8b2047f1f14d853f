// experiments/sweep_store.hpp -- the sweep driver's parts (experiments/sweep.cpp), kept apart to be tested:
//
//   SweepVariant<Grid, Estimator, Schedule>   a named quantizer variant ("relaxed-linear-int2");
//                                             VariantProduct lists every combination of three
//                                             policy lists, select_variants picks some by name,
//                                             glob ("*-int2") or "all"
//   SweepPoint / SweepGrid                    the run-time hyper-parameters of one run, and the
//                                             lists of values a sweep takes their product over;
//                                             parse_axis reads "0.05,0.1" and "100:700:200"
//   SweepRecord                               what one run produced: a CSV line, a JSON line
//   SweepStore                                PREFIX.csv and PREFIX.jsonl, appended one whole line
//                                             per write, repaired on opening (a torn last line is
//                                             cut away), resumable (completed runs are known)
//   summarize_sweep / print_sweep_summary     per variant, the spread of the final error of its
//                                             best configuration over seeds and layers
//
// The hyper-parameter axes are listed once, in for_each_axis: the option names, the CSV columns,
// the record key and the product over the grid all come from that list.
#pragma once

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/common/error.hpp>
#include <gsq/core/train.hpp>
#include <gsq/io/regular_file.hpp>
#include <gsq/policy/dispatch.hpp>

namespace gsq {

// ---------------------------------------------------------------------------------------------
// Variants: compile-time policy combinations with run-time names.

/// A quantizer variant a sweep compiles in, named estimator-schedule-grid ("ste-cosine-int2").
template <class Grid_, class Estimator_, class Schedule_>
struct SweepVariant {
  using Grid = Grid_;
  using Estimator = Estimator_;
  using Schedule = Schedule_;
  static std::string name() { return std::string(Estimator::name) + "-" + Schedule::name + "-" + Grid::name; }
};

namespace detail {
template <class... Lists>
struct Concat {
  using type = TypeList<>;
};
template <class... Policies>
struct Concat<TypeList<Policies...>> {
  using type = TypeList<Policies...>;
};
template <class... First, class... Second, class... Rest>
struct Concat<TypeList<First...>, TypeList<Second...>, Rest...> : Concat<TypeList<First..., Second...>, Rest...> {};

template <class Estimator, class Schedule, class Grids>
struct VariantsOf;
template <class Estimator, class Schedule, class... Grids>
struct VariantsOf<Estimator, Schedule, TypeList<Grids...>> {
  using type = TypeList<SweepVariant<Grids, Estimator, Schedule>...>;
};

template <class Estimator, class Schedules, class Grids>
struct VariantsOfEstimator;
template <class Estimator, class... Schedules, class Grids>
struct VariantsOfEstimator<Estimator, TypeList<Schedules...>, Grids>
    : Concat<typename VariantsOf<Estimator, Schedules, Grids>::type...> {};

template <class Estimators, class Schedules, class Grids>
struct VariantProduct;
template <class... Estimators, class Schedules, class Grids>
struct VariantProduct<TypeList<Estimators...>, Schedules, Grids>
    : Concat<typename VariantsOfEstimator<Estimators, Schedules, Grids>::type...> {};
}  // namespace detail

/// The TypeLists `Lists` one after the other.
template <class... Lists>
using ConcatLists = typename detail::Concat<Lists...>::type;

/// Every SweepVariant of an estimator, a schedule and a grid from the three lists, estimators
/// outermost and grids innermost.
template <class Estimators, class Schedules, class Grids>
using VariantProduct = typename detail::VariantProduct<Estimators, Schedules, Grids>::type;

/// Variants spelled by their name(), for gsq::Choice.
struct ByVariantName {
  template <class Variant>
  static std::string spelling() { return Variant::name(); }
  template <class Variant>
  static bool matches(const std::string& key) { return key == Variant::name(); }
};

namespace detail {
inline std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::size_t begin = 0;
  for (std::size_t end; (end = text.find(separator, begin)) != std::string::npos; begin = end + 1)
    parts.push_back(text.substr(begin, end - begin));
  parts.push_back(text.substr(begin));
  return parts;
}

inline std::string join(const std::vector<std::string>& parts, const std::string& separator) {
  std::string text;
  for (const std::string& part : parts) text += (text.empty() ? "" : separator) + part;
  return text;
}
}  // namespace detail

/// The variants a --variants value selects from `names`, in the order of `names`: a comma-separated
/// list of exact names, shell globs ("*-int2", "relaxed-*") and "all". Throws gsq::Error, listing the
/// valid names, for a name or a glob that matches nothing.
inline std::vector<std::string> select_variants(const std::string& selection, const std::vector<std::string>& names) {
  std::set<std::string> chosen;
  for (const std::string& item : detail::split(selection, ',')) {
    const auto matches = [&](const std::string& name) {
      return item == "all" || ::fnmatch(item.c_str(), name.c_str(), 0) == 0;
    };
    bool matched = false;
    for (const std::string& name : names)
      if (matches(name)) {
        chosen.insert(name);
        matched = true;
      }
    if (!matched)
      throw Error("unknown variant '" + item + "' in --variants '" + selection + "': expected all, a glob such as " +
                  "'*-int2', or one of " + detail::join(names, ", "));
  }
  std::vector<std::string> selected;
  for (const std::string& name : names)
    if (chosen.count(name)) selected.push_back(name);
  return selected;
}

// ---------------------------------------------------------------------------------------------
// Hyper-parameters: one run's values (SweepPoint) and a sweep's lists of values (SweepGrid).

namespace detail {
template <class T>
using Single = T;
template <class T>
using Values = std::vector<T>;
}  // namespace detail

/// The run-time hyper-parameters of a sweep, each held in a `Slot<T>`: one value (SweepPoint) or
/// a list of values (SweepGrid). Defaults are the reference's (docs/design.md section 3).
template <template <class> class Slot>
struct Hyperparameters {
  Slot<double> tau_start{2.0};
  Slot<double> tau_end{0.05};
  Slot<double> kappa_start{100.0};
  Slot<double> kappa_end{500.0};
  Slot<double> lr_logits{1e-4};
  Slot<double> lr_scales{5e-5};
  Slot<std::string> optimizer{"lion"};
  Slot<long> steps{640};
  Slot<std::string> init{"rtn"};
  Slot<long> seed{0};
  Slot<long> group{128};
};

using SweepPoint = Hyperparameters<detail::Single>;
using SweepGrid = Hyperparameters<detail::Values>;

/// Calls visit(flag, description, hyperparameters.member...) for every axis, in the order of the
/// CSV columns; `hyperparameters` are SweepPoints or SweepGrids (visited side by side). The one
/// list of the axes: add an axis here and to Hyperparameters, and every other place follows.
template <class Visitor, class... Sets>
void for_each_axis(Visitor&& visit, Sets&... sets) {
  visit("tau-start", "Gumbel-softmax temperature at the first step", sets.tau_start...);
  visit("tau-end", "temperature at the last step", sets.tau_end...);
  visit("kappa-start", "logit scale at the first step", sets.kappa_start...);
  visit("kappa-end", "logit scale at the last step", sets.kappa_end...);
  visit("lr-logits", "peak learning rate of the logits (weight decay 1, cosine decay to 0.1x)", sets.lr_logits...);
  visit("lr-scales", "peak learning rate of the scales", sets.lr_scales...);
  visit("optimizer", "optimizer: lion or adam", sets.optimizer...);
  visit("steps", "optimizer steps", sets.steps...);
  visit("init", "starting point: rtn (max-abs round-to-nearest) or gptq", sets.init...);
  visit("seed", "seed of the Gumbel noise and the logit initialisation", sets.seed...);
  visit("group", "input columns sharing one scale", sets.group...);
}

/// The column name of an axis: its flag with '_' for '-' ("tau_end").
inline std::string column_name(const std::string& flag) {
  std::string name = flag;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

/// The TrainConfig of one point; settings that are not axes keep the reference's defaults.
inline TrainConfig train_config(const SweepPoint& point) {
  TrainConfig config;
  config.steps = point.steps;
  config.seed = static_cast<std::uint64_t>(point.seed);
  config.anneal = {point.tau_start, point.tau_end, point.kappa_start, point.kappa_end};
  config.logits.learning_rate = point.lr_logits;
  config.scales.learning_rate = point.lr_scales;
  return config;
}

/// Number of points in the grid: the product of the lengths of its lists, refused beyond a
/// million (counted in floating point, so a product of long lists cannot wrap around).
inline std::size_t point_count(const SweepGrid& grid) {
  constexpr double max_points = 1e6;
  double count = 1;
  for_each_axis([&](const char*, const char*, const auto& values) { count *= static_cast<double>(values.size()); }, grid);
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", count);
  require(count <= max_points, std::string("the sweep's lists make ") + text +
                                   " points, more than a million: shorten them or split the sweep");
  return static_cast<std::size_t>(count);
}

/// Every point of the grid, the first axis varying fastest.
inline std::vector<SweepPoint> grid_points(const SweepGrid& grid) {
  std::vector<SweepPoint> points(point_count(grid));
  for (std::size_t index = 0; index < points.size(); ++index) {
    std::size_t rest = index;
    for_each_axis(
        [&](const char*, const char*, auto& value, const auto& values) {
          value = values[rest % values.size()];
          rest /= values.size();
        },
        points[index], grid);
  }
  return points;
}

namespace detail {
/// Shortest text that reads back as exactly `value` ("0.1", "1e-05", "640").
inline std::string format_value(double value) {
  char buffer[64];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}
inline std::string format_value(long value) { return std::to_string(value); }
inline std::string format_value(const std::string& value) { return value; }

}  // namespace detail

/// The values as a --flag spells them: "0.05,0.1".
template <class T>
std::string format_list(const std::vector<T>& values) {
  std::vector<std::string> texts;
  for (const T& value : values) texts.push_back(detail::format_value(value));
  return detail::join(texts, ",");
}

namespace detail {
/// Parses all of `text` as a T; false for anything else (trailing characters, overflow).
inline bool parse_value(const std::string& text, double& value) {
  const char* last = text.data() + text.size();
  const std::from_chars_result result = std::from_chars(text.data(), last, value);
  return result.ec == std::errc() && result.ptr == last && std::isfinite(value);
}
inline bool parse_value(const std::string& text, long& value) {
  const char* last = text.data() + text.size();
  const std::from_chars_result result = std::from_chars(text.data(), last, value);
  return result.ec == std::errc() && result.ptr == last;
}
inline bool parse_value(const std::string& text, std::string& value) {
  value = text;
  return !text.empty();
}

inline const char* kind_of(double) { return "a number"; }
inline const char* kind_of(long) { return "an integer"; }

/// The values of start:stop:step (stop included when it lands on it). Values of a real range are
/// rounded to 12 significant digits, so that 0.05:0.2:0.05 gives 0.15, not 0.15000000000000002.
template <class T>
std::vector<T> range_values(const std::string& flag, const std::string& item) {
  const std::vector<std::string> parts = split(item, ':');
  const std::string usage = flag + ": '" + item + "' is not a range start:stop:step (such as 100:700:200)";
  require(parts.size() == 3, usage);
  T start{}, stop{}, step{};
  for (const auto& [text, value] : {std::pair<const std::string&, T&>{parts[0], start}, {parts[1], stop}, {parts[2], step}})
    require(parse_value(text, value), usage + ": '" + text + "' is not " + kind_of(T{}));
  require(step > 0, flag + ": the step of the range " + item + " must be positive");
  require(start <= stop, flag + ": the range " + item + " is empty (its start " + parts[0] + " is above its stop " +
                             parts[1] + ")");
  constexpr double max_values = 100000;
  const double count = std::floor(static_cast<double>(stop - start) / static_cast<double>(step) * (1 + 1e-12)) + 1;
  require(count <= max_values, flag + ": the range " + item + " has more than 100000 values");
  std::vector<T> values;
  for (long i = 0; i < static_cast<long>(count); ++i) {
    T value = static_cast<T>(start + static_cast<T>(i) * step);
    if constexpr (std::is_floating_point<T>::value) {
      char rounded[32];
      std::snprintf(rounded, sizeof rounded, "%.12g", value);
      parse_value(rounded, value);
    }
    values.push_back(value);
  }
  return values;
}
}  // namespace detail

/// The values a sweep flag lists: comma-separated values ("0.05,0.1,0.2") and, for numbers,
/// inclusive ranges start:stop:step ("100:700:200" is 100,300,500,700). A value listed twice runs
/// once. Throws gsq::Error naming the flag and the bad item.
template <class T>
std::vector<T> parse_axis(const std::string& flag, const std::string& text) {
  std::vector<T> values;
  for (const std::string& item : detail::split(text, ',')) {
    std::vector<T> items;
    require(!item.empty(), flag + ": an empty item in '" + text + "'");
    if constexpr (std::is_same<T, std::string>::value) {
      items = {item};
    } else if (item.find(':') != std::string::npos) {
      items = detail::range_values<T>(flag, item);
    } else {
      T value{};
      require(detail::parse_value(item, value), flag + ": '" + item + "' in '" + text + "' is not " +
                                                    detail::kind_of(T{}) +
                                                    " (expected a list such as 1,2,4 or a range start:stop:step)");
      items = {value};
    }
    for (const T& value : items)
      if (std::find(values.begin(), values.end(), value) == values.end()) values.push_back(value);
  }
  return values;
}

// ---------------------------------------------------------------------------------------------
// Records: what one run produced, as a CSV line and a JSON line.

struct SweepRecord {
  std::string variant;
  SweepPoint point;
  std::string layer;
  long rows = 0;
  long cols = 0;
  double init_error = 0;   // relative Hessian error of the starting point (RTN or GPTQ)
  double final_error = 0;  // relative Hessian error of GSQ's hard result
  double bpp = 0;          // bits per parameter, 16-bit scales
  double seconds = 0;      // wall time of the run: starting point, training and evaluation
};

/// Calls visit(column, record.member...) for every CSV column, in order.
template <class Visitor, class... Records>
void for_each_field(Visitor&& visit, Records&... records) {
  visit("variant", records.variant...);
  for_each_axis([&](const char* flag, const char*, auto&... values) { visit(column_name(flag), values...); },
                records.point...);
  visit("layer", records.layer...);
  visit("rows", records.rows...);
  visit("cols", records.cols...);
  visit("init_error", records.init_error...);
  visit("final_error", records.final_error...);
  visit("bpp", records.bpp...);
  visit("seconds", records.seconds...);
}

/// What identifies a run: the variant, every hyper-parameter and the layer. A rerun skips the
/// runs whose key is already recorded.
inline std::string record_key(const SweepRecord& record) {
  std::string key = record.variant;
  for_each_axis([&](const char*, const char*, const auto& value) { key += '\x1f' + detail::format_value(value); },
                record.point);
  return key + '\x1f' + record.layer;
}

/// The configuration of a run: its key without the seed and the layer, which a summary averages over.
inline std::string configuration_key(const SweepRecord& record) {
  std::string key = record.variant;
  for_each_axis(
      [&](const std::string& flag, const char*, const auto& value) {
        if (flag != "seed") key += '\x1f' + detail::format_value(value);
      },
      record.point);
  return key;
}

namespace detail {
/// A CSV field, quoted (RFC 4180) when it holds a comma or a quote.
inline std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"") == std::string::npos) return text;
  std::string quoted = "\"";
  for (const char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

/// The fields of one CSV line (no line break inside); std::nullopt for malformed quoting.
inline std::optional<std::vector<std::string>> split_csv_line(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c != '"') {
        fields.back() += c;
      } else if (i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else {
        quoted = false;
        if (i + 1 < line.size() && line[i + 1] != ',') return std::nullopt;
      }
    } else if (c == ',') {
      fields.emplace_back();
    } else if (c == '"' && fields.back().empty()) {
      quoted = true;
    } else {
      fields.back() += c;
    }
  }
  if (quoted) return std::nullopt;
  return fields;
}
}  // namespace detail

/// The CSV header line, without its line break.
inline std::string csv_header() {
  std::vector<std::string> columns;
  SweepRecord record;
  for_each_field([&](const std::string& column, const auto&) { columns.push_back(column); }, record);
  return detail::join(columns, ",");
}

/// One CSV line, without its line break.
inline std::string csv_line(const SweepRecord& record) {
  std::vector<std::string> fields;
  for_each_field([&](const std::string&, const auto& value) { fields.push_back(detail::csv_field(detail::format_value(value))); },
                 record);
  return detail::join(fields, ",");
}

/// The record a CSV line holds; std::nullopt when the line is not one (torn, wrong columns).
inline std::optional<SweepRecord> parse_csv_line(const std::string& line) {
  const std::optional<std::vector<std::string>> fields = detail::split_csv_line(line);
  SweepRecord record;
  std::size_t column = 0;
  bool valid = fields.has_value();
  for_each_field(
      [&](const std::string&, auto& value) {
        valid = valid && column < fields->size() && detail::parse_value((*fields)[column], value);
        ++column;
      },
      record);
  if (!valid || column != fields->size()) return std::nullopt;
  return record;
}

/// The record as a JSON object with the CSV's column names.
inline nlohmann::json json_record(const SweepRecord& record) {
  nlohmann::json object = nlohmann::json::object();
  for_each_field([&](const std::string& column, const auto& value) { object[column] = value; }, record);
  return object;
}

// ---------------------------------------------------------------------------------------------
// The result store.

namespace detail {
/// What a sweep CSV holds: its records, and how many bytes of it are intact.
struct SweepCsv {
  std::vector<SweepRecord> records;
  std::size_t intact_bytes = 0;  // the header and every complete record line
  std::optional<std::string> torn_line;  // the last line, when it was cut short or does not parse
};

/// Parses the text of a sweep CSV. Only the last line may be torn (a crash mid-write); any other
/// bad line, or a different header, means the file is not ours to append to: gsq::Error.
inline SweepCsv parse_sweep_csv(const std::string& text, const std::string& path) {
  SweepCsv csv;
  const std::string header = csv_header();
  std::size_t begin = 0;
  for (long line_number = 1; begin < text.size(); ++line_number) {
    const std::size_t end = text.find('\n', begin);
    const bool complete = end != std::string::npos;
    const bool last = !complete || end + 1 == text.size();
    const std::string line = text.substr(begin, complete ? end - begin : std::string::npos);
    std::optional<SweepRecord> record;
    if (line_number == 1) {
      const bool header_cut_short = !complete && header.compare(0, line.size(), line) == 0;
      if (header_cut_short) {
        csv.torn_line = line;
        break;
      }
      require(complete && line == header,
              path + " does not start with the columns of a sweep (" + header + "): use another --out");
    } else if (!(record = complete ? parse_csv_line(line) : std::nullopt)) {
      if (last) {
        csv.torn_line = line;
        break;
      }
      throw Error(path + ": line " + std::to_string(line_number) + " is not a sweep record: '" + line +
                  "' (only a torn last line is repaired)");
    }
    if (record) csv.records.push_back(std::move(*record));
    csv.intact_bytes = end + 1;
    begin = end + 1;
  }
  return csv;
}

inline std::string read_whole_file(int fd, const std::string& path) {
  std::string text;
  char buffer[1 << 16];
  for (off_t offset = 0;;) {
    const ssize_t n = ::pread(fd, buffer, sizeof buffer, offset);
    if (n < 0 && errno == EINTR) continue;
    require(n >= 0, "cannot read " + path + ": " + std::strerror(errno));
    if (n == 0) return text;
    text.append(buffer, static_cast<std::size_t>(n));
    offset += n;
  }
}

/// Appends `line` with one write() (the file is O_APPEND), then flushes it to the disk: a crash
/// leaves the line whole or absent, or at worst cut short at the end, which opening repairs.
inline void append_line(int fd, const std::string& line, const std::string& path) {
  ssize_t written;
  do written = ::write(fd, line.data(), line.size());
  while (written < 0 && errno == EINTR);
  require(written == static_cast<ssize_t>(line.size()),
          "cannot append to " + path + ": " + (written < 0 ? std::strerror(errno) : "short write (disk full?)"));
  require(::fdatasync(fd) == 0, "cannot flush " + path + ": " + std::strerror(errno));
}

inline int open_for_append(const std::string& path, int extra_flags) {
  return open_regular_file(path, "the sweep's records", O_RDWR | O_CREAT | O_APPEND | extra_flags);
}
}  // namespace detail

/// The records of a sweep CSV, for reading only (a summary): a torn last line is ignored, not cut.
inline std::vector<SweepRecord> read_sweep_records(const std::string& csv_path) {
  const int fd = open_regular_file(csv_path, "sweep records");
  std::string text;
  try {
    text = detail::read_whole_file(fd, csv_path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return detail::parse_sweep_csv(text, csv_path).records;
}

/// PREFIX.csv and PREFIX.jsonl: one line per completed run, in both. Opening locks the CSV
/// (one sweep writes it at a time), cuts a torn last line away, and rewrites PREFIX.jsonl from
/// the CSV, so that the two always hold the same records. append() is thread-safe.
class SweepStore {
 public:
  explicit SweepStore(const std::string& prefix) : csv_path_(prefix + ".csv"), jsonl_path_(prefix + ".jsonl") {
    const std::filesystem::path directory = std::filesystem::absolute(csv_path_).parent_path();
    require(std::filesystem::is_directory(directory),
            "--out " + prefix + ": the directory " + directory.string() + " does not exist");
    csv_fd_ = detail::open_for_append(csv_path_, 0);
    try {
      require(::flock(csv_fd_, LOCK_EX | LOCK_NB) == 0, "another sweep is writing " + csv_path_ + " (it is locked)");
      const detail::SweepCsv csv = detail::parse_sweep_csv(detail::read_whole_file(csv_fd_, csv_path_), csv_path_);
      if (csv.torn_line || csv.intact_bytes == 0) {
        require(::ftruncate(csv_fd_, static_cast<off_t>(csv.intact_bytes)) == 0,
                "cannot repair " + csv_path_ + ": " + std::strerror(errno));
        repaired_line_ = csv.torn_line;
      }
      if (csv.intact_bytes == 0) detail::append_line(csv_fd_, csv_header() + "\n", csv_path_);
      records_ = csv.records;
      for (const SweepRecord& record : records_) keys_.insert(record_key(record));
      rewrite_jsonl();
    } catch (...) {
      close();
      throw;
    }
  }
  SweepStore(const SweepStore&) = delete;
  SweepStore& operator=(const SweepStore&) = delete;
  ~SweepStore() { close(); }

  const std::string& csv_path() const { return csv_path_; }
  const std::string& jsonl_path() const { return jsonl_path_; }
  /// The records found on opening (appended ones are not added).
  const std::vector<SweepRecord>& records() const { return records_; }
  /// The torn last line opening cut away, if there was one.
  const std::optional<std::string>& repaired_line() const { return repaired_line_; }

  bool contains(const SweepRecord& record) const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return keys_.count(record_key(record)) != 0;
  }

  /// Appends the record to both files: the CSV first, since it is what a rerun trusts.
  void append(const SweepRecord& record) {
    const std::lock_guard<std::mutex> lock(mutex_);
    detail::append_line(csv_fd_, csv_line(record) + "\n", csv_path_);
    detail::append_line(jsonl_fd_, json_record(record).dump() + "\n", jsonl_path_);
    keys_.insert(record_key(record));
  }

 private:
  /// PREFIX.jsonl from the CSV's records, through a temporary file and a rename (never torn).
  void rewrite_jsonl() {
    const std::string temporary = jsonl_path_ + ".tmp." + std::to_string(::getpid());
    const int fd = detail::open_for_append(temporary, O_TRUNC);
    try {
      std::string text;
      for (const SweepRecord& record : records_) text += json_record(record).dump() + "\n";
      if (!text.empty()) detail::append_line(fd, text, temporary);
      require(::rename(temporary.c_str(), jsonl_path_.c_str()) == 0,
              "cannot write " + jsonl_path_ + ": " + std::strerror(errno));
    } catch (...) {
      ::close(fd);
      std::remove(temporary.c_str());
      throw;
    }
    jsonl_fd_ = fd;  // still the file's descriptor after the rename
  }

  void close() {
    for (int* fd : {&csv_fd_, &jsonl_fd_})
      if (*fd >= 0) {
        ::close(*fd);
        *fd = -1;
      }
  }

  std::string csv_path_, jsonl_path_;
  int csv_fd_ = -1, jsonl_fd_ = -1;
  std::vector<SweepRecord> records_;
  std::set<std::string> keys_;
  std::optional<std::string> repaired_line_;
  mutable std::mutex mutex_;
};

// ---------------------------------------------------------------------------------------------
// Summary.

/// A variant's best configuration (lowest mean final error) and the spread of its final error
/// over the seeds and layers it ran on.
struct VariantSummary {
  std::string variant;
  SweepPoint best;             // the configuration; its seed is that of the first run
  std::size_t runs = 0;        // seeds x layers
  double mean = 0, std = 0;    // of the final error over all runs (std: sample standard deviation)
  double min = 0, max = 0;
  double seed_std = 0;         // sample standard deviation over seeds of the per-seed mean over layers
  double init_mean = 0;        // mean error of the starting points of the same runs
};

namespace detail {
inline double sample_std(const std::vector<double>& values) {
  if (values.size() < 2) return 0;
  double mean = 0, squares = 0;
  for (const double value : values) mean += value / static_cast<double>(values.size());
  for (const double value : values) squares += (value - mean) * (value - mean);
  return std::sqrt(squares / static_cast<double>(values.size() - 1));
}

/// The summary of the runs of one configuration of one variant.
inline VariantSummary summarize_runs(const std::vector<const SweepRecord*>& runs) {
  VariantSummary summary;
  summary.variant = runs.front()->variant;
  summary.best = runs.front()->point;
  summary.runs = runs.size();
  summary.min = summary.max = runs.front()->final_error;
  std::vector<double> errors;
  std::map<long, std::vector<double>> errors_of_seed;
  for (const SweepRecord* record : runs) {
    errors.push_back(record->final_error);
    errors_of_seed[record->point.seed].push_back(record->final_error);
    summary.mean += record->final_error / static_cast<double>(runs.size());
    summary.init_mean += record->init_error / static_cast<double>(runs.size());
    summary.min = std::min(summary.min, record->final_error);
    summary.max = std::max(summary.max, record->final_error);
  }
  summary.std = sample_std(errors);
  std::vector<double> seed_means;
  for (const auto& [seed, seed_errors] : errors_of_seed) {
    double mean = 0;
    for (const double error : seed_errors) mean += error / static_cast<double>(seed_errors.size());
    seed_means.push_back(mean);
  }
  summary.seed_std = sample_std(seed_means);
  return summary;
}
}  // namespace detail

/// One VariantSummary per variant in `records`, best (lowest mean) first.
inline std::vector<VariantSummary> summarize_sweep(const std::vector<SweepRecord>& records) {
  std::map<std::string, std::map<std::string, std::vector<const SweepRecord*>>> runs;  // variant, configuration
  for (const SweepRecord& record : records) runs[record.variant][configuration_key(record)].push_back(&record);
  std::vector<VariantSummary> summaries;
  for (const auto& [variant, configurations] : runs) {
    std::optional<VariantSummary> best;
    for (const auto& [key, group] : configurations) {
      const VariantSummary summary = detail::summarize_runs(group);
      if (!best || summary.mean < best->mean) best = summary;
    }
    summaries.push_back(*best);
  }
  std::stable_sort(summaries.begin(), summaries.end(),
                   [](const VariantSummary& a, const VariantSummary& b) { return a.mean < b.mean; });
  return summaries;
}

/// Prints the summary of `records` as a table, best variant first. The best configuration names
/// the axes that take more than one value in the records (seed aside, which is averaged over).
inline void print_sweep_summary(std::ostream& out, const std::vector<SweepRecord>& records, const std::string& source) {
  std::map<std::string, std::set<std::string>> values_of_axis;
  std::set<std::string> layers;
  for (const SweepRecord& record : records) {
    layers.insert(record.layer);
    for_each_axis([&](const char* flag, const char*, const auto& value) { values_of_axis[flag].insert(detail::format_value(value)); },
                  record.point);
  }
  std::vector<std::string> swept, fixed;
  const SweepPoint axes;  // only the axis names are read
  for_each_axis(
      [&](const std::string& flag, const char*, const auto&) {
        const std::set<std::string>& values = values_of_axis[flag];
        const std::string listed = flag + "=" + detail::join({values.begin(), values.end()}, ",");
        (values.size() > 1 ? swept : fixed).push_back(listed);
      },
      axes);
  const std::vector<VariantSummary> summaries = summarize_sweep(records);
  out << "sweep summary of " << source << ": records " << records.size() << ", variants " << summaries.size()
      << ", layers " << layers.size() << "\n"
      << "swept: " << (swept.empty() ? "nothing" : detail::join(swept, " ")) << "\n"
      << "fixed: " << detail::join(fixed, " ") << "\n"
      << "final relative error of each variant's best configuration over its seeds and layers\n"
      << "(std: sample standard deviation over all its runs; seed std: over seeds, of the mean over layers)\n";
  int width = 7;
  for (const VariantSummary& summary : summaries) width = std::max(width, static_cast<int>(summary.variant.size()));
  char line[512];
  std::snprintf(line, sizeof line, "%4s  %-*s %5s %10s %10s %10s %10s %10s %10s  %s\n", "rank", width, "variant", "runs",
                "mean", "std", "seed std", "min", "max", "init mean", "best configuration");
  out << line;
  for (std::size_t rank = 0; rank < summaries.size(); ++rank) {
    const VariantSummary& summary = summaries[rank];
    std::vector<std::string> configuration;
    for_each_axis(
        [&](const std::string& flag, const char*, const auto& value) {
          if (flag != "seed" && values_of_axis[flag].size() > 1)
            configuration.push_back(flag + "=" + detail::format_value(value));
        },
        summary.best);
    std::snprintf(line, sizeof line, "%4zu  %-*s %5zu %10.5g %10.3g %10.3g %10.5g %10.5g %10.5g  ", rank + 1, width,
                  summary.variant.c_str(), summary.runs, summary.mean, summary.std, summary.seed_std, summary.min,
                  summary.max, summary.init_mean);
    out << line << (configuration.empty() ? "-" : detail::join(configuration, " ")) << "\n";
  }
}

}  // namespace gsq
