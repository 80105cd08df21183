// The expert state on this rank, as the migrator sees it (parallel/migrator.h): an expert's
// weights and AdamW moments, created when an expert arrives and freed when it leaves. Under
// ZeRO-1 an arriving expert's moments are this rank's rows of its own bucket, the same rows
// its sender holds (same expert-data-parallel rank), so the optimizer shard moves as it is.
#pragma once

#include <vector>

#include "model/model_config.h"
#include "parallel/migrator.h"
#include "train/optimizer.h"

namespace moerun {

class ExpertStore final : public ExpertStateStore {
 public:
  // edp: the expert-data-parallel group (its size and rank place ZeRO-1 shards).
  ExpertStore(const ModelConfig& model, bool shard_optimizer, ParameterStore& params, AdamW& optimizer,
              const ProcessGroup& edp);
  std::vector<Tensor*> expert_tensors(int layer, int expert) override;
  std::vector<Tensor*> create_expert(int layer, int expert) override;
  void drop_expert(int layer, int expert) override;
  // Creates and frees, once, the state of `per_layer` experts of each MoE block in `layers`
  // that this rank does not hold (placements[i] is layers[i]'s). The device keeps freed memory
  // for later allocations of the same sizes, so experts that arrive by migration or
  // replication are written into memory it already holds and has touched: a rebalance does
  // not first ask for that memory mid-run. (On the VMs this runs on, a first write to fresh
  // pages runs at 1.5-1.9 GB/s, a second at 24.)
  void reserve_arrivals(const std::vector<int>& layers, const std::vector<Placement>& placements, int ep_rank,
                        int per_layer);

 private:
  const ModelConfig& model_;
  bool shard_;
  ParameterStore& params_;
  AdamW& optimizer_;
  const ProcessGroup& edp_;
};

}  // namespace moerun
