// Wiring: the components a Trainer is built from that the config chooses by name or value —
// the token dispatcher of each block (one process: local; expert-parallel: all-to-all, with
// the flat or node-leader exchange) and the data source (synthetic tasks or a token file).
#pragma once

#include <memory>
#include <vector>

#include "data/data_source.h"
#include "parallel/token_dispatcher.h"
#include "parallel/topology.h"
#include "train/config.h"

namespace moerun {

// The average message of a flat token exchange to one peer of the EP group: one micro-batch's
// token-copies (tokens x top_k) over the group, d_model values each in the compute dtype.
double flat_exchange_message_bytes(const Config& config);

// parallel.all_to_all resolved for an EP group whose ranks sit on these nodes. auto takes the
// node-leader exchange when the group spans nodes, some node holds several of its ranks (their
// rows for another node then travel as one message), and a flat message is at most
// parallel.leader_exchange_kib: with larger messages the saved per-message latencies are
// worth less than what one leader's link costs carrying its whole node's rows (moerun-sim:
// the flat exchange wins above about 35 KiB per message on trn2 and 90 KiB on H100 nodes).
// The step simulator asks the same.
bool use_hierarchical_exchange(const Config& config, const std::vector<int>& node_of_ep_rank);

// One dispatcher per block, each with the static placement. Collective over the EP group
// (the node-leader exchange splits groups).
std::vector<std::unique_ptr<TokenDispatcher>> make_dispatchers(const Config& config, const Topology& topology);

std::unique_ptr<DataSource> make_data(const Config& config);

}  // namespace moerun
