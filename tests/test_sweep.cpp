// Tests of experiments/sweep_store.hpp (value lists, variant selection, records, the result store, the
// summary) and of the sweep driver (experiments/sweep.cpp) run as a program.
#include <catch2/catch.hpp>

#include "program_runner.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../experiments/sweep_store.hpp"
#include <gsq/gsq.hpp>

namespace fs = std::filesystem;

namespace {

using gsq::testing::Outcome;
using gsq::testing::read_file;


/// A scratch directory that also names a sweep output prefix inside it.
struct ScratchDirectory : gsq::testing::ScratchDirectory {
  std::string prefix() const { return (path / "runs").string(); }
};


void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

Outcome run_sweep(const std::string& arguments) { return gsq::testing::run_program("sweep", arguments); }

// A tiny layer and a few steps: every run takes milliseconds. One thread unless a test is about threads.
const std::string tiny = "--rows 16 --cols 128 --tokens 256 --quiet";

std::string out_flag(const ScratchDirectory& scratch) { return " --out '" + scratch.prefix() + "'"; }

/// The records of a sweep's CSV, keyed by record_key.
std::map<std::string, gsq::SweepRecord> records_by_key(const std::string& prefix) {
  std::map<std::string, gsq::SweepRecord> records;
  for (const gsq::SweepRecord& record : gsq::read_sweep_records(prefix + ".csv")) {
    INFO("key " << gsq::record_key(record));
    CHECK(records.emplace(gsq::record_key(record), record).second);  // no run recorded twice
  }
  return records;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  for (std::size_t begin = 0, end; begin < text.size(); begin = end + 1) {
    end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(begin, end - begin));
  }
  return lines;
}

/// A record with the given variant, seed, layer and final error (for the store and summary tests).
gsq::SweepRecord make_record(const std::string& variant, long seed, const std::string& layer, double final_error) {
  gsq::SweepRecord record;
  record.variant = variant;
  record.point.seed = seed;
  record.layer = layer;
  record.rows = 16;
  record.cols = 128;
  record.init_error = 0.5;
  record.final_error = final_error;
  record.bpp = 2.125;
  record.seconds = 0.25;
  return record;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// experiments/sweep_store.hpp

TEST_CASE("parse_axis reads lists and inclusive ranges") {
  CHECK(gsq::parse_axis<long>("--steps", "100:700:200") == std::vector<long>{100, 300, 500, 700});
  CHECK(gsq::parse_axis<long>("--steps", "100:600:200") == std::vector<long>{100, 300, 500});  // 600 is not landed on
  CHECK(gsq::parse_axis<long>("--steps", "7:7:1") == std::vector<long>{7});
  CHECK(gsq::parse_axis<long>("--seed", "0,3,1:2:1") == std::vector<long>{0, 3, 1, 2});
  CHECK(gsq::parse_axis<long>("--seed", "1,2,1") == std::vector<long>{1, 2});  // a value listed twice runs once
  CHECK(gsq::parse_axis<double>("--tau-end", "0.05,0.1,0.2") == std::vector<double>{0.05, 0.1, 0.2});
  // Exactly the numbers the text names, not 0.15000000000000002.
  CHECK(gsq::parse_axis<double>("--tau-end", "0.05:0.2:0.05") == std::vector<double>{0.05, 0.1, 0.15, 0.2});
  CHECK(gsq::parse_axis<double>("--lr-logits", "1e-4:5e-4:2e-4") == std::vector<double>{1e-4, 3e-4, 5e-4});
  CHECK(gsq::parse_axis<std::string>("--optimizer", "lion,adam") == std::vector<std::string>{"lion", "adam"});
}

TEST_CASE("parse_axis rejects malformed values with a message naming the flag and the item") {
  const auto message = [](auto parse) -> std::string {
    try {
      parse();
    } catch (const gsq::Error& error) {
      return error.what();
    }
    return "no error";
  };
  CHECK_THAT(message([] { gsq::parse_axis<double>("--tau-end", "0.1,abc"); }),
             Catch::Contains("--tau-end") && Catch::Contains("'abc'") && Catch::Contains("not a number"));
  CHECK_THAT(message([] { gsq::parse_axis<long>("--steps", "5:1:1"); }),
             Catch::Contains("--steps") && Catch::Contains("5:1:1") && Catch::Contains("empty"));
  CHECK_THAT(message([] { gsq::parse_axis<long>("--steps", "1.5"); }), Catch::Contains("not an integer"));
  CHECK_THAT(message([] { gsq::parse_axis<long>("--steps", "1:9:0"); }), Catch::Contains("must be positive"));
  CHECK_THAT(message([] { gsq::parse_axis<long>("--steps", "1:9"); }), Catch::Contains("start:stop:step"));
  CHECK_THAT(message([] { gsq::parse_axis<double>("--tau-end", "0.1,,0.2"); }), Catch::Contains("empty item"));
  CHECK_THAT(message([] { gsq::parse_axis<double>("--tau-end", "nan"); }), Catch::Contains("not a number"));
  CHECK_THAT(message([] { gsq::parse_axis<long>("--steps", "1:10000000:1"); }), Catch::Contains("more than"));
  CHECK_THAT(message([] { gsq::parse_axis<std::string>("--init", "rtn,"); }), Catch::Contains("empty item"));
}

TEST_CASE("grid_points is the product of the axes, each point once") {
  gsq::SweepGrid grid;
  grid.tau_end = {0.05, 0.1};
  grid.steps = {10, 20, 30};
  grid.optimizer = {"lion", "adam"};
  const std::vector<gsq::SweepPoint> points = gsq::grid_points(grid);
  REQUIRE(points.size() == 12);
  CHECK(gsq::point_count(grid) == 12);
  std::set<std::string> keys;
  for (const gsq::SweepPoint& point : points) {
    gsq::SweepRecord record;
    record.point = point;
    keys.insert(gsq::record_key(record));
    CHECK(point.tau_start == 2.0);  // axes not swept keep the reference's value
    CHECK(point.lr_logits == 1e-4);
  }
  CHECK(keys.size() == 12);
}

TEST_CASE("select_variants takes names, globs and all, in list order") {
  const std::vector<std::string> names = {"relaxed-linear-int2", "ste-linear-int2", "relaxed-cosine-int3"};
  CHECK(gsq::select_variants("all", names) == names);
  CHECK(gsq::select_variants("*-int2", names) == std::vector<std::string>{"relaxed-linear-int2", "ste-linear-int2"});
  CHECK(gsq::select_variants("relaxed-cosine-int3,relaxed-*", names) ==
        std::vector<std::string>{"relaxed-linear-int2", "relaxed-cosine-int3"});
  CHECK_THROWS_WITH(gsq::select_variants("relaxed-linear-int2,nosuch", names),
                    Catch::Contains("'nosuch'") && Catch::Contains("ste-linear-int2"));
  CHECK_THROWS_WITH(gsq::select_variants("*-int5", names), Catch::Contains("'*-int5'"));
}

TEST_CASE("VariantProduct names every estimator x schedule x grid once") {
  using Variants = gsq::VariantProduct<gsq::EstimatorPolicies, gsq::SchedulePolicies, gsq::GridPolicies>;
  const std::vector<std::string> names = gsq::Choice<Variants, gsq::ByVariantName>::spellings();
  CHECK(names.size() == 36);
  CHECK(std::set<std::string>(names.begin(), names.end()).size() == 36);
  CHECK(names.front() == "relaxed-linear-ternary");
  CHECK(names.back() == "deterministic-exponential-int4");
  CHECK(gsq::Choice<Variants, gsq::ByVariantName>("variant", "ste-cosine-int3").visit([](auto tag) {
    using Variant = gsq::type_of<decltype(tag)>;
    return std::is_same<Variant, gsq::SweepVariant<gsq::Int<3>, gsq::StraightThrough, gsq::CosineAnneal>>::value;
  }));
}

TEST_CASE("a record survives its CSV line, quoting included") {
  gsq::SweepRecord record = make_record("ste-cosine-int2", 3, "layer \"a\", b", 0.1 + 0.2);
  record.point.tau_end = 0.15;
  record.point.optimizer = "adam";
  const std::string line = gsq::csv_line(record);
  const std::optional<gsq::SweepRecord> back = gsq::parse_csv_line(line);
  REQUIRE(back);
  CHECK(gsq::csv_line(*back) == line);
  CHECK(back->layer == record.layer);
  CHECK(back->final_error == record.final_error);  // shortest round-trip text, no digits lost
  CHECK(back->point.tau_end == 0.15);
  CHECK(gsq::record_key(*back) == gsq::record_key(record));
  CHECK_FALSE(gsq::parse_csv_line(line.substr(0, line.size() - 3) + ",x"));
  CHECK_FALSE(gsq::parse_csv_line(line.substr(0, line.size() / 2)));
  const nlohmann::json json = gsq::json_record(record);
  CHECK(json.at("tau_end") == 0.15);
  CHECK(json.at("optimizer") == "adam");
  CHECK(json.at("steps") == 640);
  const std::string header = gsq::csv_header();
  CHECK(json.size() == static_cast<std::size_t>(std::count(header.begin(), header.end(), ',') + 1));  // one key per column
}

TEST_CASE("SweepStore appends whole lines, repairs a torn last line and locks the file") {
  const ScratchDirectory scratch;
  const std::string prefix = scratch.prefix();
  {
    gsq::SweepStore store(prefix);
    CHECK(store.records().empty());
    store.append(make_record("a", 0, "l", 0.3));
    store.append(make_record("a", 1, "l", 0.2));
    CHECK(store.contains(make_record("a", 1, "l", 0.9)));  // the key ignores the results
    CHECK_FALSE(store.contains(make_record("a", 2, "l", 0.2)));
    CHECK_THROWS_WITH(gsq::SweepStore(prefix), Catch::Contains("another sweep"));
  }
  const std::string intact = read_file(prefix + ".csv");
  CHECK(lines_of(intact).size() == 3);
  CHECK(lines_of(intact)[0] == gsq::csv_header());

  for (const std::string& torn : {std::string("a,2,0.0"), std::string("a,2,0.0\n"), std::string("garbage\n")}) {
    write_file(prefix + ".csv", intact + torn);
    write_file(prefix + ".jsonl", "stale\n");
    const gsq::SweepStore store(prefix);
    REQUIRE(store.repaired_line());
    CHECK(*store.repaired_line() + (torn.back() == '\n' ? "\n" : "") == torn);
    CHECK(store.records().size() == 2);
    CHECK(read_file(prefix + ".csv") == intact);
    const std::vector<std::string> json_lines = lines_of(read_file(prefix + ".jsonl"));  // rebuilt from the CSV
    REQUIRE(json_lines.size() == 2);
    CHECK(nlohmann::json::parse(json_lines[1]).at("final_error") == 0.2);
  }

  // Damage that is not at the end is not ours to repair.
  std::vector<std::string> lines = lines_of(intact);
  write_file(prefix + ".csv", lines[0] + "\ngarbage\n" + lines[1] + "\n");
  CHECK_THROWS_WITH(gsq::SweepStore(prefix), Catch::Contains("line 2"));
  write_file(prefix + ".csv", "name,value\n");
  CHECK_THROWS_WITH(gsq::SweepStore(prefix), Catch::Contains("does not start with the columns of a sweep"));
}

TEST_CASE("summarize_sweep ranks variants by the mean error of their best configuration") {
  std::vector<gsq::SweepRecord> records;
  for (const long seed : {0, 1})
    for (const std::string layer : {"x", "y"}) {
      records.push_back(make_record("worse", seed, layer, 0.30 + 0.01 * seed));
      gsq::SweepRecord good = make_record("better", seed, layer, 0.20 + (layer == "y" ? 0.02 : 0.0));
      records.push_back(good);
      good.point.steps = 10;  // a second, poorer configuration of the same variant
      good.final_error = 0.9;
      records.push_back(good);
    }
  const std::vector<gsq::VariantSummary> summaries = gsq::summarize_sweep(records);
  REQUIRE(summaries.size() == 2);
  CHECK(summaries[0].variant == "better");
  CHECK(summaries[0].best.steps == 640);
  CHECK(summaries[0].runs == 4);
  CHECK(summaries[0].mean == Approx(0.21));
  CHECK(summaries[0].min == Approx(0.20));
  CHECK(summaries[0].max == Approx(0.22));
  CHECK(summaries[0].std == Approx(std::sqrt(4 * 0.01 * 0.01 / 3)));  // sample standard deviation
  CHECK(summaries[0].seed_std == Approx(0.0).margin(1e-12));  // both seeds average 0.21 over the layers
  CHECK(summaries[0].init_mean == Approx(0.5));
  CHECK(summaries[1].variant == "worse");
  CHECK(summaries[1].mean == Approx(0.305));
  CHECK(summaries[1].seed_std == Approx(std::sqrt(0.01 * 0.01 / 2)));
}

// ---------------------------------------------------------------------------------------------
// The sweep driver

TEST_CASE("sweep: every variant compiled in instantiates and runs") {
  const ScratchDirectory scratch;
  const Outcome outcome = run_sweep("--variants all --steps 3 --threads 1 " + tiny + out_flag(scratch));
  INFO("stderr: " << outcome.err);
  REQUIRE(outcome.status == 0);
  const std::vector<gsq::SweepRecord> records = gsq::read_sweep_records(scratch.prefix() + ".csv");
  REQUIRE(records.size() == 36);
  std::set<std::string> variants;
  for (const gsq::SweepRecord& record : records) {
    INFO(record.variant);
    variants.insert(record.variant);
    CHECK(std::isfinite(record.init_error));
    CHECK(std::isfinite(record.final_error));
    CHECK(record.init_error > 0);
    CHECK(record.final_error > 0);
    const auto has = [&](const char* grid) { return record.variant.find(grid) != std::string::npos; };
    const int code_bits = has("int3") ? 3 : has("int4") ? 4 : 2;  // ternary codes take 2 bits too
    CHECK(record.bpp == code_bits + 16.0 / 128);
    CHECK(record.point.steps == 3);
    CHECK(record.layer == "synthetic-s1-16x128-t256");
  }
  CHECK(variants.size() == 36);
  const Outcome listed = run_sweep("--list");
  REQUIRE(listed.status == 0);
  const std::vector<std::string> names = lines_of(listed.out);
  CHECK(names.size() == 36);
  CHECK(std::set<std::string>(names.begin(), names.end()) == variants);
  const Outcome int2 = run_sweep("--list --variants '*-int2'");
  REQUIRE(int2.status == 0);
  CHECK(lines_of(int2.out).size() == 9);
  CHECK_THAT(int2.out, Catch::Contains("ste-exponential-int2\n") && !Catch::Contains("int3"));
}

TEST_CASE("sweep: --layers runs on every safetensors file of a directory") {
  const ScratchDirectory scratch;
  const fs::path layers = scratch.path / "layers";
  fs::create_directories(layers);
  for (const std::uint64_t seed : {1, 2}) {
    const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({16, 128, 256, seed});
    gsq::SafetensorsWriter writer;
    writer.add("W", layer.weight);
    writer.add("H", gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs).hessian());
    writer.write((layers / ("proj" + std::to_string(seed) + ".safetensors")).string());
  }
  write_file(layers / "README.txt", "not a layer");
  const Outcome outcome = run_sweep("--layers '" + layers.string() + "' --steps 3 --threads 1 --quiet" + out_flag(scratch));
  INFO("stderr: " << outcome.err);
  REQUIRE(outcome.status == 0);
  std::set<std::string> names;
  for (const gsq::SweepRecord& record : gsq::read_sweep_records(scratch.prefix() + ".csv")) {
    names.insert(record.layer);
    CHECK(record.rows == 16);
    CHECK(record.final_error > 0);
  }
  CHECK(names == std::set<std::string>{"proj1", "proj2"});

  gsq::SafetensorsWriter incomplete;
  incomplete.add("W", gsq::Matrix<float>(4, 128, 1.0f));
  incomplete.write((layers / "proj3.safetensors").string());
  const Outcome missing = run_sweep("--layers '" + layers.string() + "' --steps 3 --quiet" + out_flag(scratch));
  CHECK(missing.status == 2);
  CHECK_THAT(missing.err, Catch::Contains("proj3.safetensors") && Catch::Contains("'H'"));
}

TEST_CASE("sweep: a two-by-two grid gives four records with every field, in both files") {
  const ScratchDirectory scratch;
  const Outcome outcome =
      run_sweep("--variants ste-cosine-int2 --tau-end 0.05,0.1 --steps 3:5:2 --threads 1 " + tiny + out_flag(scratch));
  INFO("stderr: " << outcome.err);
  REQUIRE(outcome.status == 0);
  const std::vector<std::string> csv_lines = lines_of(read_file(scratch.prefix() + ".csv"));
  REQUIRE(csv_lines.size() == 5);
  CHECK(csv_lines[0] ==
        "variant,tau_start,tau_end,kappa_start,kappa_end,lr_logits,lr_scales,optimizer,steps,init,seed,group,"
        "layer,rows,cols,init_error,final_error,bpp,seconds");
  std::set<std::pair<double, long>> combinations;
  for (const gsq::SweepRecord& record : gsq::read_sweep_records(scratch.prefix() + ".csv")) {
    combinations.insert({record.point.tau_end, record.point.steps});
    CHECK(record.variant == "ste-cosine-int2");
    CHECK(record.point.tau_start == 2.0);
    CHECK(record.point.optimizer == "lion");
    CHECK(record.point.init == "rtn");
    CHECK(record.point.group == 128);
    CHECK(record.rows == 16);
    CHECK(record.cols == 128);
    CHECK(record.bpp == 2.125);
    CHECK(record.seconds >= 0);
  }
  CHECK(combinations == std::set<std::pair<double, long>>{{0.05, 3}, {0.05, 5}, {0.1, 3}, {0.1, 5}});

  const std::vector<std::string> json_lines = lines_of(read_file(scratch.prefix() + ".jsonl"));
  REQUIRE(json_lines.size() == 4);
  for (const std::string& line : json_lines) {
    const nlohmann::json record = nlohmann::json::parse(line);
    CHECK(record.size() == 19);
    CHECK(record.at("variant") == "ste-cosine-int2");
    CHECK(record.at("final_error").is_number_float());
    CHECK(record.at("steps").is_number_integer());
  }
  CHECK_THAT(outcome.out, Catch::Contains("ste-cosine-int2") && Catch::Contains("swept: tau-end=0.05,0.1 steps=3,5"));
}

TEST_CASE("sweep: a rerun skips recorded runs and redoes the one a torn line lost") {
  const ScratchDirectory scratch;
  const std::string arguments = "--variants relaxed-linear-int2,deterministic-linear-int2 --seed 0,1 --steps 4 "
                                "--threads 1 " + tiny + out_flag(scratch);
  REQUIRE(run_sweep(arguments).status == 0);
  const std::string csv_path = scratch.prefix() + ".csv";
  const std::string complete = read_file(csv_path);
  const std::map<std::string, gsq::SweepRecord> first = records_by_key(scratch.prefix());
  REQUIRE(first.size() == 4);

  const Outcome again = run_sweep(arguments);
  REQUIRE(again.status == 0);
  CHECK(read_file(csv_path) == complete);  // nothing added

  // A crash in the middle of the last line, and garbage appended without a line break.
  for (const std::string& damaged : {complete.substr(0, complete.size() - 25), complete + "relaxed-linear-int2,GARBAGE"}) {
    write_file(csv_path, damaged);
    const Outcome repaired = run_sweep(arguments);
    INFO("stderr: " << repaired.err);
    REQUIRE(repaired.status == 0);
    const std::string text = read_file(csv_path);
    CHECK(text.back() == '\n');
    CHECK(text.find("GARBAGE") == std::string::npos);
    const std::map<std::string, gsq::SweepRecord> redone = records_by_key(scratch.prefix());
    REQUIRE(redone.size() == 4);
    for (const auto& [key, record] : redone) {  // the lost run is redone with the same numbers
      CHECK(record.final_error == first.at(key).final_error);
      CHECK(record.init_error == first.at(key).init_error);
    }
    CHECK(lines_of(read_file(scratch.prefix() + ".jsonl")).size() == 4);
  }
}

TEST_CASE("sweep: the numbers do not depend on --threads") {
  const ScratchDirectory one, two;
  const std::string arguments = "--variants relaxed-cosine-int2,ste-linear-int3 --seed 0,1 --steps 6 " + tiny;
  REQUIRE(run_sweep(arguments + " --threads 1" + out_flag(one)).status == 0);
  REQUIRE(run_sweep(arguments + " --threads 2" + out_flag(two)).status == 0);
  const std::map<std::string, gsq::SweepRecord> serial = records_by_key(one.prefix());
  const std::map<std::string, gsq::SweepRecord> parallel = records_by_key(two.prefix());
  REQUIRE(serial.size() == 4);
  REQUIRE(parallel.size() == 4);
  for (const auto& [key, record] : serial) {
    REQUIRE(parallel.count(key));
    CHECK(parallel.at(key).init_error == record.init_error);
    CHECK(parallel.at(key).final_error == record.final_error);
  }
}

TEST_CASE("sweep: --init gptq starts from GPTQ, which beats RTN") {
  const ScratchDirectory scratch;
  const Outcome outcome = run_sweep("--variants relaxed-linear-int2 --init rtn,gptq --steps 3 --threads 1 --rows 32 "
                                    "--cols 128 --tokens 512 --quiet" + out_flag(scratch));
  INFO("stderr: " << outcome.err);
  REQUIRE(outcome.status == 0);
  std::map<std::string, double> init_error;
  for (const gsq::SweepRecord& record : gsq::read_sweep_records(scratch.prefix() + ".csv"))
    init_error[record.point.init] = record.init_error;
  REQUIRE(init_error.size() == 2);
  CHECK(init_error.at("gptq") < init_error.at("rtn"));
}

TEST_CASE("sweep: a config file holds the same options, and the command line wins") {
  const ScratchDirectory scratch;
  write_file(scratch.path / "sweep.cfg", "# an ablation\nvariants = ste-*-int2\ntau-end = 0.1,0.2\nsteps = 50\n");
  const Outcome outcome =
      run_sweep("--config '" + (scratch.path / "sweep.cfg").string() + "' --steps 2 --threads 1 " + tiny + out_flag(scratch));
  INFO("stderr: " << outcome.err);
  REQUIRE(outcome.status == 0);
  const std::vector<gsq::SweepRecord> records = gsq::read_sweep_records(scratch.prefix() + ".csv");
  CHECK(records.size() == 6);  // three ste-*-int2 variants x two tau-end
  for (const gsq::SweepRecord& record : records) {
    CHECK(record.variant.rfind("ste-", 0) == 0);
    CHECK(record.point.steps == 2);
  }
}

TEST_CASE("sweep: bad input fails with status 2, a clear message, and no output files") {
  struct Case {
    std::string flags;
    std::vector<std::string> message;
  };
  const std::vector<Case> cases = {
      {"--tau-end 0.1,abc", {"--tau-end", "'abc'", "not a number"}},
      {"--steps 5:1:1", {"--steps", "5:1:1", "empty"}},
      {"--variants relaxed-linear-int2,nosuch", {"unknown variant 'nosuch'", "relaxed-linear-int2", "deterministic-exponential-int4"}},
      {"--variants '*-int5'", {"unknown variant '*-int5'", "ste-cosine-int3"}},
      {"--optimizer lion,sgd", {"--optimizer", "'sgd'", "lion, adam"}},
      {"--init awq", {"--init", "'awq'", "rtn, gptq"}},
      {"--group 64", {"--group", "'64'", "128"}},
      {"--tau-end 0.1,-1", {"temperature", "tau-end=-1"}},
      {"--steps 0", {"steps must be positive"}},
      {"--seed -1", {"--seed", "non-negative"}},
      {"--layers /nonexistent/layers", {"--layers", "not a directory"}},
      {"--out /nonexistent/dir/runs", {"/nonexistent/dir", "does not exist"}},
      {"--config /nonexistent/sweep.cfg", {"--config"}},
      {"--bogus 1", {"bogus"}},
  };
  for (const Case& test : cases) {
    const ScratchDirectory scratch;
    const auto unless_given = [&](const std::string& flag, const std::string& value) {
      return test.flags.find(flag) == std::string::npos ? " " + flag + " " + value : std::string();
    };
    const Outcome outcome = run_sweep(test.flags + unless_given("--steps", "3") + unless_given("--out", scratch.prefix()) +
                                      " --threads 1 " + tiny);
    INFO(test.flags << "\nstderr: " << outcome.err);
    CHECK(outcome.status == 2);
    for (const std::string& part : test.message) CHECK_THAT(outcome.err, Catch::Contains(part));
    CHECK(fs::is_empty(scratch.path));
  }
}

TEST_CASE("sweep: --summary ranks the variant with lower errors first") {
  const ScratchDirectory scratch;
  std::string csv = gsq::csv_header() + "\n";
  for (const long seed : {0, 1, 2}) {
    csv += gsq::csv_line(make_record("ste-linear-int2", seed, "layer", 0.4 + 0.01 * seed)) + "\n";
    csv += gsq::csv_line(make_record("relaxed-cosine-int2", seed, "layer", 0.1 + 0.01 * seed)) + "\n";
  }
  write_file(scratch.prefix() + ".csv", csv);
  const Outcome outcome = run_sweep("--summary" + out_flag(scratch));
  INFO("stderr: " << outcome.err);
  REQUIRE(outcome.status == 0);
  const std::size_t better = outcome.out.find("relaxed-cosine-int2"), worse = outcome.out.find("ste-linear-int2");
  REQUIRE(better != std::string::npos);
  REQUIRE(worse != std::string::npos);
  CHECK(better < worse);
  CHECK_THAT(outcome.out, Catch::Contains("0.11") && Catch::Contains("0.41") && Catch::Contains("records 6"));
  CHECK(read_file(scratch.prefix() + ".csv") == csv);  // a summary runs nothing and writes nothing
  CHECK_FALSE(fs::exists(scratch.prefix() + ".jsonl"));

  const Outcome missing = run_sweep("--summary --out '" + (scratch.path / "absent").string() + "'");
  CHECK(missing.status == 2);
  CHECK_THAT(missing.err, Catch::Contains("absent.csv"));
}

TEST_CASE("sweep: --help explains every flag") {
  const Outcome outcome = run_sweep("--help");
  REQUIRE(outcome.status == 0);
  for (const std::string flag : {"--variants", "--list", "--layers", "--synthetic", "--rows", "--cols", "--tokens",
                                 "--tau-start", "--tau-end", "--kappa-start", "--kappa-end", "--lr-logits", "--lr-scales",
                                 "--optimizer", "--steps", "--init", "--seed", "--group", "--config", "--out",
                                 "--threads", "--summary", "--quiet", "--help"})
    CHECK_THAT(outcome.out, Catch::Contains(flag));
}

TEST_CASE("plot_sweep.py turns a sweep CSV into PNG charts") {
  // Plotting is optional: without Debian's python3-matplotlib this test only says so.
  if (std::system("/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1") != 0) {
    WARN("skipped: /usr/bin/python3 with matplotlib is missing (apt-get install python3-matplotlib)");
    return;
  }
  const ScratchDirectory scratch;
  std::string csv = gsq::csv_header() + "\n";
  for (const std::string variant : {"relaxed-linear-int2", "ste-cosine-int2"})
    for (const double tau_end : {0.05, 0.1, 0.2})
      for (const long seed : {0, 1}) {
        gsq::SweepRecord record = make_record(variant, seed, "layer", 0.2 + tau_end + 0.01 * seed);
        record.point.tau_end = tau_end;
        csv += gsq::csv_line(record) + "\n";
      }
  write_file(scratch.prefix() + ".csv", csv + "relaxed-linear-int2,2,0.1");  // a torn last line is ignored
  const std::string script = GSQ_SOURCE_DIR "/scripts/plot_sweep.py";
  const std::string images = (scratch.path / "images").string();
  const int status = std::system(("'" + script + "' '" + scratch.prefix() + ".csv' --out-dir '" + images + "' > /dev/null").c_str());
  REQUIRE(status == 0);
  for (const std::string chart : {"runs_tau_end.png", "runs_variants.png"}) {
    INFO(chart);
    const std::string png = read_file(fs::path(images) / chart);
    REQUIRE(png.size() > 1000);
    CHECK(png.substr(1, 3) == "PNG");
  }
  CHECK_FALSE(fs::exists(fs::path(images) / "runs_seed.png"));  // seeds are the error bars, not an axis

  write_file(scratch.path / "other.csv", "name,value\nx,1\n");
  CHECK(std::system(("'" + script + "' '" + (scratch.path / "other.csv").string() + "' 2> /dev/null").c_str()) != 0);
}
