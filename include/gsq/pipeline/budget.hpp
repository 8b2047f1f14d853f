// gsq/pipeline/budget.hpp -- the best model that fits: each tensor's type chosen from its measured
// sensitivity (gsq/pipeline/sensitivity.hpp) so that the file's tensors fit a size, and the sum of
// the tensors' own divergences (the predicted KL) is least. A multiple-choice knapsack, solved by
// dynamic programming over the bytes above the smallest file, in at most `cells` steps of equal
// bytes (each choice's extra bytes rounded up, so the plan always fits), then any bytes the
// rounding left spent on the upgrades that lower the prediction most per byte.
//
//   gsq::BudgetPlan plan = gsq::plan_budget(table, gsq::budget_bytes_of_bpw(table, 3.5));
//   gsq::GgmlMix mix = gsq::budget_mix(config, table, plan);   // a gguf table: into SequentialQuantizer<GgmlMixFormat>
//   gsq::GridMixFormat schemes(gsq::budget_schemes(table, plan));   // a compressed-tensors one
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/format/ggml_types.hpp"
#include "gsq/model/config.hpp"
#include "gsq/model/gguf_layout.hpp"
#include "gsq/pipeline/ggml_mix.hpp"
#include "gsq/pipeline/sensitivity.hpp"
#include "gsq/policy/grid_scheme.hpp"

namespace gsq {

/// The type chosen for each tensor of a table, and what the file then is.
struct BudgetPlan {
  std::vector<std::size_t> choice;  // per tensor of the table: the index of its chosen type
  std::uint64_t budget = 0;         // bytes the file's tensors were to fit
  std::uint64_t bytes = 0;          // bytes its tensors take, the float ones included
  double predicted_kl = 0;          // the sum of the chosen types' own divergences

  double bits_per_weight(const SensitivityTable& table) const {
    return 8.0 * static_cast<double>(bytes) / static_cast<double>(table.parameters);
  }
};

/// The file's tensor bytes with every tensor in its smallest (largest) candidate.
inline std::uint64_t budget_smallest(const SensitivityTable& table) {
  std::uint64_t bytes = table.fixed_bytes;
  for (const TensorSensitivity& tensor : table.tensors) bytes += tensor.choices.front().bytes;
  return bytes;
}
inline std::uint64_t budget_largest(const SensitivityTable& table) {
  std::uint64_t bytes = table.fixed_bytes;
  for (const TensorSensitivity& tensor : table.tensors) bytes += tensor.choices.back().bytes;
  return bytes;
}

/// The tensor bytes of `bits_per_weight` over every parameter of the file.
inline std::uint64_t budget_bytes_of_bpw(const SensitivityTable& table, double bits_per_weight) {
  require(std::isfinite(bits_per_weight) && bits_per_weight > 0,
          "the budget in bits per weight must be a positive number, got " + std::to_string(bits_per_weight));
  return static_cast<std::uint64_t>(std::floor(bits_per_weight * static_cast<double>(table.parameters) / 8.0));
}

/// An error unless a file of `budget` tensor bytes can be made from the table's candidates;
/// `what` names the budget as the user gave it.
inline void require_budget(const SensitivityTable& table, std::uint64_t budget, const std::string& what) {
  const auto bpw = [&](std::uint64_t bytes) {
    char text[64];
    std::snprintf(text, sizeof text, "%llu bytes (%.4f bits per weight)", static_cast<unsigned long long>(bytes),
                  8.0 * static_cast<double>(bytes) / static_cast<double>(table.parameters));
    return std::string(text);
  };
  require(8.0 * static_cast<double>(budget) < 16.0 * static_cast<double>(table.parameters),
          what + " is " + bpw(budget) + ": at 16 bits per weight or more the model is its unquantized self; nothing to choose");
  require(budget >= budget_smallest(table), what + " is " + bpw(budget) + ", below the smallest file the candidate types make, " +
                                                bpw(budget_smallest(table)) + ": add smaller candidates or raise the budget");
  require(budget <= budget_largest(table), what + " is " + bpw(budget) + ", above the largest file the candidate types make, " +
                                               bpw(budget_largest(table)) + ": add larger candidates or lower the budget");
}

/// The choices of least predicted KL whose bytes fit `budget` (require_budget first); `cells`: the
/// resolution of the dynamic programme (its table has tensors x cells entries).
inline BudgetPlan plan_budget(const SensitivityTable& table, std::uint64_t budget, std::uint64_t cells = 1 << 16) {
  require(table.measured, "a budget is planned from a measured sensitivity table");
  require_budget(table, budget, "the budget");
  const std::size_t count = table.tensors.size();
  const std::uint64_t smallest = budget_smallest(table), slack = budget - smallest;
  const std::uint64_t step = std::max<std::uint64_t>(1, (slack + cells - 1) / cells);
  const std::size_t capacity = static_cast<std::size_t>(slack / step);
  const auto extra = [&](const TensorSensitivity& tensor, std::size_t c) {  // in steps, rounded up
    return static_cast<std::size_t>((tensor.choices[c].bytes - tensor.choices.front().bytes + step - 1) / step);
  };
  // least[s]: the least KL of the tensors so far within s steps; picked[i][s]: tensor i's choice there.
  const double none = std::numeric_limits<double>::infinity();
  std::vector<double> least(capacity + 1, 0.0), next(capacity + 1);
  std::vector<std::vector<std::uint8_t>> picked(count, std::vector<std::uint8_t>(capacity + 1, 0));
  for (std::size_t i = 0; i < count; ++i) {
    const TensorSensitivity& tensor = table.tensors[i];
    require(tensor.choices.size() < 256, tensor.name + ": more than 255 candidate types");
    for (std::size_t s = 0; s <= capacity; ++s) {
      next[s] = none;
      for (std::size_t c = 0; c < tensor.choices.size(); ++c) {
        const std::size_t cost = extra(tensor, c);
        if (cost > s) continue;  // (least[] is finite everywhere: every tensor's smallest choice costs no step)
        const double kl = least[s - cost] + tensor.choices[c].kl;
        if (kl < next[s]) next[s] = kl, picked[i][s] = static_cast<std::uint8_t>(c);  // equal KL: the smaller type
      }
    }
    least.swap(next);
  }
  BudgetPlan plan{std::vector<std::size_t>(count), budget, 0, 0};
  for (std::size_t i = count, s = capacity; i-- > 0;) {
    plan.choice[i] = picked[i][s];
    s -= extra(table.tensors[i], plan.choice[i]);
  }
  // The rounding's leftover bytes: the upgrade of best KL saved per byte that still fits, until none does.
  const auto bytes_of = [&]() {
    std::uint64_t bytes = table.fixed_bytes;
    for (std::size_t i = 0; i < count; ++i) bytes += table.tensors[i].choices[plan.choice[i]].bytes;
    return bytes;
  };
  for (std::uint64_t used = bytes_of();;) {
    double best = 0;
    std::size_t best_tensor = count, best_choice = 0;
    for (std::size_t i = 0; i < count; ++i) {
      const SensitivityChoice& now = table.tensors[i].choices[plan.choice[i]];
      for (std::size_t c = 0; c < table.tensors[i].choices.size(); ++c) {
        const SensitivityChoice& other = table.tensors[i].choices[c];
        if (other.bytes <= now.bytes || used - now.bytes + other.bytes > budget || other.kl >= now.kl) continue;
        const double gain = (now.kl - other.kl) / static_cast<double>(other.bytes - now.bytes);
        if (gain > best) best = gain, best_tensor = i, best_choice = c;
      }
    }
    if (best_tensor == count) break;
    used += table.tensors[best_tensor].choices[best_choice].bytes - table.tensors[best_tensor].choices[plan.choice[best_tensor]].bytes;
    plan.choice[best_tensor] = best_choice;
  }
  plan.bytes = bytes_of();
  for (std::size_t i = 0; i < count; ++i) plan.predicted_kl += table.tensors[i].choices[plan.choice[i]].kl;
  return plan;
}

/// The plan as a llama.cpp mix of the model (`config`): its chosen types, the rest in float.
inline GgmlMix budget_mix(const LlamaConfig& config, const SensitivityTable& table, const BudgetPlan& plan, const std::string& source) {
  require(plan.choice.size() == table.tensors.size() && table.format == "gguf", "the plan is not of this gguf sensitivity table");
  std::map<std::string, GgmlType> chosen;
  for (std::size_t i = 0; i < table.tensors.size(); ++i)
    chosen[table.tensors[i].name] = ggml_type_named(table.tensors[i].choices[plan.choice[i]].type, table.tensors[i].name);
  const std::vector<GgufTensorLayout> layout = gguf_layout(config);
  std::vector<GgmlType> types;
  for (const GgufTensorLayout& tensor : layout) {
    const auto found = chosen.find(tensor.gguf);
    types.push_back(found != chosen.end() ? found->second : GgmlType::F32);  // float either way: the export keeps the checkpoint's
  }
  return detail::ggml_mix_of(config, layout, types, source);
}

/// The plan of a compressed-tensors table: each linear's grid scheme, by checkpoint name.
inline std::map<std::string, GridScheme> budget_schemes(const SensitivityTable& table, const BudgetPlan& plan) {
  require(plan.choice.size() == table.tensors.size() && table.format == "compressed-tensors",
          "the plan is not of this compressed-tensors sensitivity table");
  std::map<std::string, GridScheme> schemes;
  for (std::size_t i = 0; i < table.tensors.size(); ++i)
    for (const std::string& name : table.tensors[i].checkpoint)
      schemes[name] = grid_scheme_named(table.tensors[i].choices[plan.choice[i]].type, table.tensors[i].name);
  return schemes;
}

/// The plan as the manifest keeps it: each tensor's type, bytes and own divergence, and the totals.
inline nlohmann::json budget_json(const SensitivityTable& table, const BudgetPlan& plan) {
  nlohmann::json tensors = nlohmann::json::array();
  for (std::size_t i = 0; i < table.tensors.size(); ++i) {
    const SensitivityChoice& choice = table.tensors[i].choices[plan.choice[i]];
    tensors.push_back({{"tensor", table.tensors[i].name}, {"type", choice.type},
                       {"bytes", choice.bytes}, {"kl", choice.kl}});
  }
  return {{"format", table.format}, {"budget_bytes", plan.budget}, {"bytes", plan.bytes}, {"bits_per_weight", plan.bits_per_weight(table)},
          {"predicted_kl", plan.predicted_kl}, {"tensors", tensors}};
}

}  // namespace gsq
