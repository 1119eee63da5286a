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

enum class AdvMode { Soft, Hard };
enum class Agg { TokenMean, SeqMeanTokenMean, SeqMeanTokenSum };

AdvMode parse_adv_mode(const std::string& mode);
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

  // Group-normalised advantage of each leaf, in leaves() order: (r - mean) / (std + eps) with the
  // Bessel-corrected std (0 for a single leaf), or r - mean without scaling.
  std::vector<double> leaf_advantages(bool scale_std, double eps) const;
  // Hard mode: per node, the mean leaf advantage over the leaves below it (index = node id).
  std::vector<double> node_advantages(bool scale_std, double eps) const;

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

void flat_shape(const TreeList& trees, int64_t* rows, int64_t* width);
void flatten(const TreeList& trees, AdvMode mode, int64_t pad_id, bool scale_std, double eps, const FlatOut& out);
// (out.width must be flat_shape's width for the same trees)

int64_t packed_size(const TreeList& trees);
void pack(const TreeList& trees, AdvMode mode, Agg agg, bool scale_std, double eps, const PackedOut& out);

}  // namespace arpo
