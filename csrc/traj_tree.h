// Trajectory tree of one prompt's branched rollouts, and the batch builders over many trees.
//
// A node is a segment of token ids of one kind: the prompt (node 0, the root), model-generated tokens
// (trainable) or a tool result (context). A root-to-leaf path is one trajectory. The core stores ids and
// numbers only; it never touches Python or tensors. Batch builders write into caller-owned buffers.
//
// Every floating-point result is computed in double, in the same order as the pure-Python fallback
// (arpo/tree/py_tree.py), so both produce bit-identical arrays (build with -ffp-contract=off).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace arpo {

// Credit assignment of a leaf's advantage to the tokens of its path (DESIGN.md, "Advantages"): soft = every token
// carries its own leaf's advantage; hard = a shared token carries the mean advantage of the leaves below it.
enum class Credit { Soft, Hard };
enum class Agg { TokenMean, SeqMeanTokenMean, SeqMeanTokenSum };

Credit parse_credit(const std::string& credit);
Agg parse_agg(const std::string& agg);

struct Node {
  int32_t parent = -1;
  bool trainable = false;
  int8_t has_logprobs = -1;  // -1: no tokens yet, 0: tokens without logprobs, 1: every token has one
  bool has_reward = false;
  double reward = 0.0;
  int64_t offset = 0;  // position (depth) of this node's first token on its path
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<int32_t> children;
};

// Caller-provided views. `ids` are int64 so that out-of-range values can be detected; `logprobs` may be null.
struct Segment {
  const int64_t* ids;
  size_t n;
  const double* logprobs;  // nullptr when absent
  size_t n_logprobs;
};

class TrajectoryTree {
 public:
  explicit TrajectoryTree(Segment prompt);

  int32_t add(int64_t parent, Segment seg, bool trainable);
  void extend(int64_t node, Segment seg);
  void set_reward(int64_t leaf, double reward);

  const Node& node(int64_t id) const;  // throws std::out_of_range for an unknown id
  int32_t num_nodes() const { return static_cast<int32_t>(nodes_.size()); }
  bool is_leaf(int32_t id) const { return id != 0 && nodes_[id].children.empty(); }
  std::vector<int32_t> leaves() const;
  std::vector<int32_t> path(int64_t leaf) const;  // node ids, root first
  int64_t num_tokens(bool unique) const;
  int64_t path_length(int32_t leaf) const { return nodes_[leaf].offset + nodes_[leaf].tokens.size(); }

  // The reward of each leaf, in leaves() order (throws if a leaf has none).
  std::vector<double> leaf_rewards() const;
  // Hard credit: per node (index = node id), the mean of `leaf_adv` (leaves() order) over the leaves below it.
  std::vector<double> node_advantages(const std::vector<double>& leaf_adv) const;

 private:
  Node& checked(int64_t id, const char* what);
  void append(Node& node, int64_t id, Segment seg);
  std::vector<Node> nodes_;
};

struct FlatOut {  // all [rows, width] except leaf_index [rows, 2]; width as flat_shape gave it
  int64_t width;
  int64_t* input_ids;
  int64_t* attention_mask;
  int64_t* position_ids;
  bool* loss_mask;
  float* advantages;
  float* old_logprobs;
  int64_t* leaf_index;
};

struct PackedOut {  // all [T] except tree_offsets [num_trees + 1]
  int64_t* input_ids;
  int64_t* position_ids;
  int64_t* prev_index;
  int64_t* span_end;
  bool* loss_mask;
  float* loss_weight;
  float* weight_pos;
  float* weight_neg;
  float* adv_pos;
  float* adv_neg;
  float* old_logprobs;
  int64_t* tree_offsets;
};

using TreeList = std::vector<const TrajectoryTree*>;
using AdvList = std::vector<std::vector<double>>;  // per tree, one advantage per leaf in leaves() order

// Throws unless `adv` has one value per leaf of `t`, each finite as a float32 (the batches store float32);
// `name` starts the messages ("leaf_advantages" or "leaf_advantages[i]").
void check_leaf_advantages(const TrajectoryTree& t, const std::vector<double>& adv, const std::string& name);

// The batch builders take the leaf advantages of every tree (an estimator's output, arpo/algos/advantages.py)
// and validate them before anything is written.
void flat_shape(const TreeList& trees, int64_t* rows, int64_t* width);
void flatten(const TreeList& trees, const AdvList& adv, Credit credit, int64_t pad_id, const FlatOut& out);
// (out.width must be flat_shape's width for the same trees)

int64_t packed_size(const TreeList& trees);
void pack(const TreeList& trees, const AdvList& adv, Credit credit, Agg agg, const PackedOut& out);

}  // namespace arpo
