#include "train/checkpoint_state.h"

#include <algorithm>
#include <set>

#include "runtime/error.h"

#include "checkpoint/state_content.h"
#include "model/feed_forward.h"
#include "model/moe_layer.h"
#include "train/planner_input.h"
#include "train/rank_agreement.h"

namespace moerun {

namespace {
const Tensor* moment(AdamW& optimizer, ckpt::Root root, const std::string& name) {
  AdamW::Moments& m = optimizer.moments(name);
  return root == ckpt::Root::MomentM ? &m.m : &m.v;
}
}  // namespace

ckpt::CheckpointContent checkpoint_content(const TrainingState& s, std::int64_t step, int rebalances, const StepResult* last) {
  const Config& config = s.config;
  ckpt::ContentBuilder b;
  const bool dense_writer = s.topology.world().rank() == 0;
  const bool expert_writer_group = s.topology.dp_rank() == 0;  // one EP group writes the experts
  std::vector<const Parameter*> dense;
  for (const Parameter* p : s.params.all())
    if (p->kind == ParamKind::Dense) dense.push_back(p);
  std::sort(dense.begin(), dense.end(), [](const Parameter* a, const Parameter* b) { return a->name < b->name; });
  // This rank's piece of one tensor. Moments under ZeRO-1: every rank writes the rows it
  // owns, so the file holds the same logical tensors as without sharding.
  auto write = [&](ckpt::Root root, const Parameter& p, bool writer) {
    const bool moments = root != ckpt::Root::Model;
    if (moments && s.grad_sync.sharded(p)) {
      const RowRange rows = s.grad_sync.owned_rows(p);
      if (!rows.empty()) b.write(root, p.name, moment(s.optimizer, root, p.name), rows.begin);
    } else if (writer) {
      b.write(root, p.name, moments ? moment(s.optimizer, root, p.name) : &p.value);
    }
  };
  nlohmann::json buffers = nlohmann::json::array();  // model datasets without moments
  for (const Buffer* buffer : s.params.buffers()) {  // the same on every rank: rank 0 writes it
    b.declare(ckpt::Root::Model, buffer->name, buffer->value.shape());
    if (dense_writer) b.write(ckpt::Root::Model, buffer->name, &buffer->value);
    buffers.push_back(ckpt::dataset_for(ckpt::Root::Model, buffer->name).path);
  }
  for (const ckpt::Root root : ckpt::kRoots) {
    for (const Parameter* p : dense) {
      b.declare(root, p->name, p->value.shape());
      write(root, *p, dense_writer);
    }
    for (std::size_t li = 0; li < s.moe_blocks.size(); ++li) {
      const std::string prefix = MoeLayer::expert_prefix(s.moe_blocks[li]);
      const auto names0 = FeedForwardSet::weight_names(config.model, prefix, 0);
      for (std::size_t w = 0; w < names0.size(); ++w) {
        b.declare(root, names0[w], FeedForwardSet::weight_shape(config.model, names0[w]), config.model.experts);
        for (int e : s.local_experts[li]) {
          const bool first_holder = s.placements.empty() || s.placements[li].replicas(e).front().rank == s.topology.ep_rank();
          if (!first_holder) continue;
          write(root, s.params.get(FeedForwardSet::weight_names(config.model, prefix, e)[w]), expert_writer_group);
        }
      }
    }
  }
  ckpt::CheckpointContent& content = b.content();
  content.int_attributes["step"] = step;
  content.int_attributes["tokens_seen"] = step * config.train.global_batch * config.model.seq_len;
  content.int_attributes["data_step"] = step;  // the data of step s is a function of (seed, s): nothing else to save
  content.int_attributes["seed"] = config.train.seed;
  content.int_attributes["world_size"] = s.topology.world().size();
  content.int_attributes["dp"] = s.topology.dp();
  content.int_attributes["ep"] = s.topology.ep();
  content.int_attributes["rebalances"] = rebalances;
  content.string_attributes["config"] = config.to_json().dump();
  content.string_attributes["moerun_version"] = program_version();
  if (last != nullptr) {
    content.string_attributes["step_metrics"] =
        nlohmann::json{{"loss", last->loss},           {"aux_loss", last->aux_loss}, {"z_loss", last->z_loss},
                       {"lr", last->lr},               {"grad_norm", last->grad_norm}, {"dropped_frac", last->dropped_frac},
                       {"update_skipped", last->update_skipped}}
            .dump();
  }
  nlohmann::json placement = nlohmann::json::array();
  for (const Placement& p : s.placements) placement.push_back(p.to_json());
  content.string_attributes["placement"] = placement.dump();
  content.string_attributes["buffers"] = buffers.dump();
  nlohmann::json history = nlohmann::json::array();
  for (const auto& h : s.monitor.history()) history.push_back(h);
  content.string_attributes["load_average"] = nlohmann::json(s.monitor.average()).dump();
  content.string_attributes["load_history"] = history.dump();
  return std::move(content);
}

std::optional<std::vector<Placement>> saved_placements(const ckpt::CheckpointReader& file, int ep, std::size_t layers) {
  if (layers == 0 || file.int_attribute("ep") != ep) return std::nullopt;
  const auto saved = nlohmann::json::parse(file.string_attribute("placement"));
  if (saved.size() != layers) return std::nullopt;
  std::vector<Placement> restored;
  for (const auto& layer : saved) restored.push_back(Placement::from_json(ep, layer));
  return restored;
}

void load_model_values(const ckpt::CheckpointReader& file, ParameterStore& params, std::int64_t experts) {
  for (Parameter* p : params.all()) ckpt::read_rows(file, ckpt::Root::Model, p->name, p->value.shape(), experts, p->value);
  for (Buffer* b : params.buffers()) ckpt::read_rows(file, ckpt::Root::Model, b->name, b->value.shape(), 0, b->value);
}

void restore_state(const ckpt::CheckpointReader& file, const TrainingState& s) {
  const std::int64_t experts = s.config.model.experts;
  // Every tensor of the file must belong to this model: a checkpoint with a layer more is not
  // silently cut down to fewer.
  std::set<std::string> mine;  // this model's datasets, whichever experts this rank holds
  for (const Parameter* p : s.params.all())
    if (p->kind == ParamKind::Dense) mine.insert(ckpt::dataset_for(ckpt::Root::Model, p->name).path);
  for (const Buffer* b : s.params.buffers()) mine.insert(ckpt::dataset_for(ckpt::Root::Model, b->name).path);
  for (int block : s.moe_blocks)
    for (const std::string& name : FeedForwardSet::weight_names(s.config.model, MoeLayer::expert_prefix(block), 0))
      mine.insert(ckpt::dataset_for(ckpt::Root::Model, name).path);
  for (const ckpt::DatasetInfo& d : file.datasets()) {
    const std::string model_root = std::string(ckpt::root_path(ckpt::Root::Model)) + "/";
    MOERUN_CHECK(d.path.rfind(model_root, 0) != 0 || mine.contains(d.path), CheckpointError,
                 "[resume] '{}' holds '{}', which this model does not have: it was written for a different model; "
                 "resume with the config stored in it (moerun-ckpt config {})",
                 file.path(), d.path, file.path());
  }
  load_model_values(file, s.params, experts);
  for (Parameter* p : s.params.all()) {
    AdamW::Moments& m = s.optimizer.moments(p->name);
    ckpt::read_rows(file, ckpt::Root::MomentM, p->name, p->value.shape(), experts, m.m, m.rows.begin);
    ckpt::read_rows(file, ckpt::Root::MomentV, p->name, p->value.shape(), experts, m.v, m.rows.begin);
  }
  const auto average = nlohmann::json::parse(file.string_attribute("load_average"));
  const auto history = nlohmann::json::parse(file.string_attribute("load_history"));
  if (average.size() == s.monitor.average().size()) {
    s.monitor = LoadMonitor(static_cast<int>(s.moe_blocks.size()), static_cast<int>(experts),
                            static_cast<int>(s.config.balance.window), load_history_steps(s.config));
    for (const auto& h : history) s.monitor.record(h.get<std::vector<std::vector<double>>>());
    s.monitor.set_average(average.get<std::vector<std::vector<double>>>());
  }
}

}  // namespace moerun
