// Implementation of the trajectory-tree core. See traj_tree.h for the contract and py_tree.py for the
// pure-Python twin; the two must stay in step (same checks, same messages, same float order).
#include "traj_tree.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace arpo {
namespace {

constexpr int64_t kMaxId = std::numeric_limits<int32_t>::max();
constexpr double kMaxReward = 1e30;  // larger rewards overflow an estimator's group variance

// Messages are built with std::string and std::to_string only, no iostreams: on the GPU machine (Ubuntu
// Python 3.12, gcc 13.3) the built module has no libstdc++ in its dependencies (ldd), and the first
// std::ostringstream in an error path crashed the process; plain strings work there.
std::string str(const std::string& s) { return s; }
std::string str(const char* s) { return s; }
template <typename T>
std::string str(T v) {
  return std::to_string(v);
}

template <typename... Args>
std::string cat(const Args&... args) {
  return (std::string() + ... + str(args));
}

void check_segment(Segment seg) {
  for (size_t i = 0; i < seg.n; ++i) {
    if (seg.ids[i] < 0 || seg.ids[i] > kMaxId)
      throw std::invalid_argument(
          cat("token id ", seg.ids[i], " at index ", i, " is outside the int32 range [0, ", kMaxId, "]"));
  }
  if (seg.logprobs == nullptr) return;
  if (seg.n_logprobs != seg.n)
    throw std::invalid_argument(cat("logprobs has ", seg.n_logprobs, " values for ", seg.n, " token ids"));
  for (size_t i = 0; i < seg.n; ++i) {  // stored as float32: must be finite there too
    if (!std::isfinite(static_cast<float>(seg.logprobs[i])))
      throw std::invalid_argument(cat("logprob at index ", i, " is not a finite float32"));
  }
}

// Per-tree quantities the batch builders need, computed once and validated before anything is written.
struct TreeStats {
  std::vector<int32_t> leaves;
  std::vector<double> leaf_adv;  // soft: per leaf (leaves() order)
  std::vector<double> node_adv;  // hard: per node
  std::vector<int64_t> loss_above;  // per node: trainable tokens on the path root..node
};

TreeStats tree_stats(const TrajectoryTree& t, const std::vector<double>& leaf_adv, Credit credit) {
  TreeStats s;
  s.leaves = t.leaves();
  if (credit == Credit::Soft)
    s.leaf_adv = leaf_adv;
  else
    s.node_adv = t.node_advantages(leaf_adv);
  const int32_t n = t.num_nodes();
  s.loss_above.assign(n, 0);
  for (int32_t i = 1; i < n; ++i) {
    const Node& nd = t.node(i);
    s.loss_above[i] = s.loss_above[nd.parent] + (nd.trainable ? static_cast<int64_t>(nd.tokens.size()) : 0);
  }
  return s;
}

std::vector<TreeStats> all_stats(const TreeList& trees, const AdvList& adv, Credit credit) {
  if (adv.size() != trees.size())
    throw std::invalid_argument(cat("leaf_advantages has ", adv.size(), " arrays for ", trees.size(), " trees"));
  for (size_t ti = 0; ti < trees.size(); ++ti)
    check_leaf_advantages(*trees[ti], adv[ti], cat("leaf_advantages[", ti, "]"));
  std::vector<TreeStats> stats;
  stats.reserve(trees.size());
  for (size_t ti = 0; ti < trees.size(); ++ti) stats.push_back(tree_stats(*trees[ti], adv[ti], credit));
  return stats;
}

// Flat aggregation weight of one row (leaf) with `n_loss` loss tokens; see DESIGN.md "Tree packing is exact".
struct AggNorm {
  Agg agg;
  int64_t total_tokens = 0;  // loss tokens over all rows (token-mean)
  int64_t num_seqs = 0;      // rows with at least one loss token (seq-mean-*)
  double weight(int64_t n_loss) const {
    if (n_loss == 0) return 0.0;
    switch (agg) {
      case Agg::TokenMean:
        return 1.0 / static_cast<double>(total_tokens);
      case Agg::SeqMeanTokenMean:
        return 1.0 / (static_cast<double>(num_seqs) * static_cast<double>(n_loss));
      case Agg::SeqMeanTokenSum:
        return 1.0 / static_cast<double>(num_seqs);
    }
    return 0.0;
  }
};

AggNorm agg_norm(const std::vector<TreeStats>& stats, Agg agg) {
  AggNorm norm{agg};
  for (const TreeStats& s : stats) {
    for (int32_t leaf : s.leaves) {
      norm.total_tokens += s.loss_above[leaf];
      norm.num_seqs += s.loss_above[leaf] > 0 ? 1 : 0;
    }
  }
  return norm;
}

// Per node, over the leaves below: summed weight W, the weights of copies with A > 0 / A < 0 (wpos, wneg),
// and the signed weighted advantages Σ w·A over those copies (pos, neg).
struct NodeSums {
  std::vector<double> w, wpos, wneg, pos, neg;
};

NodeSums node_sums(const TrajectoryTree& t, const TreeStats& s, Credit credit, const AggNorm& norm) {
  const int32_t n = t.num_nodes();
  const std::vector<double> zeros(n, 0.0);
  NodeSums ns{zeros, zeros, zeros, zeros, zeros};
  for (size_t j = 0; j < s.leaves.size(); ++j) {
    const int32_t leaf = s.leaves[j];
    ns.w[leaf] = norm.weight(s.loss_above[leaf]);
    if (credit == Credit::Soft) {
      const double c = ns.w[leaf] * s.leaf_adv[j];
      if (s.leaf_adv[j] > 0.0) ns.pos[leaf] = c, ns.wpos[leaf] = ns.w[leaf];
      if (s.leaf_adv[j] < 0.0) ns.neg[leaf] = c, ns.wneg[leaf] = ns.w[leaf];
    }
  }
  for (int32_t i = n - 1; i > 0; --i) {
    const int32_t p = t.node(i).parent;
    ns.w[p] += ns.w[i];
    ns.wpos[p] += ns.wpos[i];
    ns.wneg[p] += ns.wneg[i];
    ns.pos[p] += ns.pos[i];
    ns.neg[p] += ns.neg[i];
  }
  if (credit == Credit::Hard) {
    for (int32_t i = 0; i < n; ++i) {
      const double c = ns.w[i] * s.node_adv[i];
      ns.pos[i] = s.node_adv[i] > 0.0 ? c : 0.0;
      ns.neg[i] = s.node_adv[i] < 0.0 ? c : 0.0;
      ns.wpos[i] = s.node_adv[i] > 0.0 ? ns.w[i] : 0.0;
      ns.wneg[i] = s.node_adv[i] < 0.0 ? ns.w[i] : 0.0;
    }
  }
  return ns;
}

// Depth-first pre-order of the node ids (children in creation order): every subtree is contiguous.
std::vector<int32_t> preorder(const TrajectoryTree& t) {
  std::vector<int32_t> order, stack{0};
  order.reserve(t.num_nodes());
  while (!stack.empty()) {
    const int32_t id = stack.back();
    stack.pop_back();
    order.push_back(id);
    const auto& ch = t.node(id).children;
    for (auto it = ch.rbegin(); it != ch.rend(); ++it) stack.push_back(*it);
  }
  return order;
}

void pack_tree(const TrajectoryTree& t, const NodeSums& ns, int64_t base, const PackedOut& out) {
  const std::vector<int32_t> order = preorder(t);
  const int32_t n = t.num_nodes();
  std::vector<int64_t> start(n), last(n), subtree_end(n);
  int64_t cursor = base;
  for (int32_t id : order) {
    const Node& nd = t.node(id);
    const int64_t len = static_cast<int64_t>(nd.tokens.size());
    start[id] = cursor;
    const int64_t before = id == 0 ? -1 : last[nd.parent];
    last[id] = len > 0 ? cursor + len - 1 : before;
    const bool lp = nd.has_logprobs == 1;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int64_t i = 0; i < len; ++i) {
      const int64_t k = cursor + i;
      out.input_ids[k] = nd.tokens[i];
      out.position_ids[k] = nd.offset + i;
      out.prev_index[k] = i == 0 ? before : k - 1;
      out.loss_mask[k] = nd.trainable;
      out.loss_weight[k] = nd.trainable ? static_cast<float>(ns.w[id]) : 0.0f;
      out.weight_pos[k] = nd.trainable ? static_cast<float>(ns.wpos[id]) : 0.0f;
      out.weight_neg[k] = nd.trainable ? static_cast<float>(ns.wneg[id]) : 0.0f;
      out.adv_pos[k] = nd.trainable ? static_cast<float>(ns.pos[id]) : 0.0f;
      out.adv_neg[k] = nd.trainable ? static_cast<float>(ns.neg[id]) : 0.0f;
      out.old_logprobs[k] = !nd.trainable ? 0.0f : (lp ? nd.logprobs[i] : nan);
    }
    cursor += len;
    subtree_end[id] = cursor;
  }
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    if (*it == 0) continue;
    const int32_t p = t.node(*it).parent;
    if (subtree_end[*it] > subtree_end[p]) subtree_end[p] = subtree_end[*it];
  }
  for (int32_t id : order) {
    const int64_t len = static_cast<int64_t>(t.node(id).tokens.size());
    for (int64_t i = 0; i < len; ++i) out.span_end[start[id] + i] = subtree_end[id];
  }
}

void flatten_row(const TrajectoryTree& t, const std::vector<int32_t>& path, double soft_adv, const TreeStats& s,
                 Credit credit, int64_t pad_id, int64_t row, const FlatOut& out) {
  const int64_t width = out.width;
  const int64_t o = row * width;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  int64_t k = 0;
  for (int32_t id : path) {
    const Node& nd = t.node(id);
    const float adv = nd.trainable ? static_cast<float>(credit == Credit::Soft ? soft_adv : s.node_adv[id]) : 0.0f;
    const bool lp = nd.has_logprobs == 1;
    for (size_t i = 0; i < nd.tokens.size(); ++i, ++k) {
      out.input_ids[o + k] = nd.tokens[i];
      out.attention_mask[o + k] = 1;
      out.position_ids[o + k] = k;
      out.loss_mask[o + k] = nd.trainable;
      out.advantages[o + k] = adv;
      out.old_logprobs[o + k] = !nd.trainable ? 0.0f : (lp ? nd.logprobs[i] : nan);
    }
  }
  for (; k < width; ++k) {
    out.input_ids[o + k] = pad_id;
    out.attention_mask[o + k] = 0;
    out.position_ids[o + k] = 0;
    out.loss_mask[o + k] = false;
    out.advantages[o + k] = 0.0f;
    out.old_logprobs[o + k] = 0.0f;
  }
}

}  // namespace

Credit parse_credit(const std::string& credit) {
  if (credit == "soft") return Credit::Soft;
  if (credit == "hard") return Credit::Hard;
  throw std::invalid_argument(cat("unknown credit '", credit, "': expected 'soft' or 'hard'"));
}

Agg parse_agg(const std::string& agg) {
  if (agg == "token-mean") return Agg::TokenMean;
  if (agg == "seq-mean-token-mean") return Agg::SeqMeanTokenMean;
  if (agg == "seq-mean-token-sum") return Agg::SeqMeanTokenSum;
  throw std::invalid_argument(
      cat("unknown agg '", agg, "': expected 'token-mean', 'seq-mean-token-mean' or 'seq-mean-token-sum'"));
}

TrajectoryTree::TrajectoryTree(Segment prompt) {
  if (prompt.n == 0) throw std::invalid_argument("prompt_ids is empty: a trajectory needs at least one prompt token");
  if (prompt.logprobs != nullptr) throw std::invalid_argument("logprobs given for a context (non-trainable) node 0");
  check_segment(prompt);
  nodes_.emplace_back();
  append(nodes_[0], 0, prompt);
}

const Node& TrajectoryTree::node(int64_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(nodes_.size()))
    throw std::out_of_range(cat("node ", id, " does not exist (the tree has ", nodes_.size(), " nodes)"));
  return nodes_[id];
}

Node& TrajectoryTree::checked(int64_t id, const char* what) {
  node(id);
  Node& nd = nodes_[id];
  if (nd.has_reward)
    throw std::invalid_argument(cat("cannot ", what, " node ", id, ": it has a reward, so it is a finished leaf"));
  return nd;
}

void TrajectoryTree::append(Node& nd, int64_t id, Segment seg) {
  if (seg.logprobs != nullptr && !nd.trainable)
    throw std::invalid_argument(cat("logprobs given for a context (non-trainable) node ", id));
  check_segment(seg);
  if (seg.n == 0) return;
  const int8_t has = seg.logprobs != nullptr ? 1 : 0;
  if (nd.has_logprobs != -1 && nd.has_logprobs != has)
    throw std::invalid_argument(cat("node ", id, has ? " was started without logprobs" : " was started with logprobs",
                                    ": give logprobs for every segment of a node or for none"));
  nd.has_logprobs = has;
  nd.tokens.insert(nd.tokens.end(), seg.ids, seg.ids + seg.n);
  if (has) nd.logprobs.insert(nd.logprobs.end(), seg.logprobs, seg.logprobs + seg.n);
}

int32_t TrajectoryTree::add(int64_t parent, Segment seg, bool trainable) {
  const Node& p = checked(parent, "branch from");
  if (nodes_.size() >= static_cast<size_t>(kMaxId)) throw std::length_error("tree is full (2^31 - 1 nodes)");
  Node child;
  child.parent = static_cast<int32_t>(parent);
  child.trainable = trainable;
  child.offset = p.offset + static_cast<int64_t>(p.tokens.size());
  const auto id = static_cast<int32_t>(nodes_.size());
  append(child, id, seg);  // validates before the tree changes
  nodes_.push_back(std::move(child));
  nodes_[parent].children.push_back(id);
  return id;
}

void TrajectoryTree::extend(int64_t id, Segment seg) {
  Node& nd = checked(id, "extend");
  if (!nd.children.empty())
    throw std::invalid_argument(
        cat("cannot extend node ", id, ": it already has children (only the last segment of a path grows)"));
  append(nd, id, seg);
}

void TrajectoryTree::set_reward(int64_t leaf, double reward) {
  const Node& nd = node(leaf);
  if (leaf == 0 || !nd.children.empty())
    throw std::invalid_argument(cat("node ", leaf, " is not a leaf (the root and nodes with children take no reward)"));
  if (!std::isfinite(reward) || std::fabs(reward) > kMaxReward)
    throw std::invalid_argument(cat("reward for leaf ", leaf, " is not finite or exceeds 1e30 in magnitude"));
  nodes_[leaf].has_reward = true;
  nodes_[leaf].reward = reward;
}

std::vector<int32_t> TrajectoryTree::leaves() const {
  std::vector<int32_t> out;
  for (int32_t i = 1; i < num_nodes(); ++i)
    if (nodes_[i].children.empty()) out.push_back(i);
  return out;
}

std::vector<int32_t> TrajectoryTree::path(int64_t leaf) const {
  node(leaf);
  std::vector<int32_t> out;
  for (int32_t id = static_cast<int32_t>(leaf); id != -1; id = nodes_[id].parent) out.push_back(id);
  return std::vector<int32_t>(out.rbegin(), out.rend());
}

int64_t TrajectoryTree::num_tokens(bool unique) const {
  int64_t total = 0;
  if (unique) {
    for (const Node& nd : nodes_) total += static_cast<int64_t>(nd.tokens.size());
  } else {
    for (int32_t leaf : leaves()) total += path_length(leaf);
  }
  return total;
}

std::vector<double> TrajectoryTree::leaf_rewards() const {
  std::vector<double> out;
  for (int32_t leaf : leaves()) {
    if (!nodes_[leaf].has_reward)
      throw std::invalid_argument(cat("leaf ", leaf, " has no reward: call set_reward() on every leaf first"));
    out.push_back(nodes_[leaf].reward);
  }
  return out;
}

std::vector<double> TrajectoryTree::node_advantages(const std::vector<double>& leaf_adv) const {
  check_leaf_advantages(*this, leaf_adv, "leaf_advantages");
  const std::vector<int32_t> ls = leaves();
  const int32_t n = num_nodes();
  std::vector<double> sum(n, 0.0), count(n, 0.0);
  for (size_t j = 0; j < ls.size(); ++j) {
    sum[ls[j]] = leaf_adv[j];
    count[ls[j]] = 1.0;
  }
  for (int32_t i = n - 1; i > 0; --i) {
    sum[nodes_[i].parent] += sum[i];
    count[nodes_[i].parent] += count[i];
  }
  for (int32_t i = 0; i < n; ++i) sum[i] = count[i] > 0.0 ? sum[i] / count[i] : 0.0;
  return sum;
}

void check_leaf_advantages(const TrajectoryTree& t, const std::vector<double>& adv, const std::string& name) {
  const size_t n = t.leaves().size();
  if (adv.size() != n)
    throw std::invalid_argument(cat(name, " has ", adv.size(), " values for the tree's ", n, " leaves"));
  for (size_t j = 0; j < n; ++j) {
    if (!std::isfinite(static_cast<float>(adv[j])))
      throw std::invalid_argument(cat(name, "[", j, "] is not a finite float32"));
  }
}

void flat_shape(const TreeList& trees, int64_t* rows, int64_t* width) {
  *rows = 0;
  *width = 1;
  for (const TrajectoryTree* t : trees) {
    for (int32_t leaf : t->leaves()) {
      *rows += 1;
      if (t->path_length(leaf) > *width) *width = t->path_length(leaf);
    }
  }
}

void flatten(const TreeList& trees, const AdvList& adv, Credit credit, int64_t pad_id, const FlatOut& out) {
  const std::vector<TreeStats> stats = all_stats(trees, adv, credit);
  int64_t row = 0;
  for (size_t ti = 0; ti < trees.size(); ++ti) {
    const TreeStats& s = stats[ti];
    for (size_t j = 0; j < s.leaves.size(); ++j, ++row) {
      const double soft = credit == Credit::Soft ? s.leaf_adv[j] : 0.0;
      flatten_row(*trees[ti], trees[ti]->path(s.leaves[j]), soft, s, credit, pad_id, row, out);
      out.leaf_index[2 * row] = static_cast<int64_t>(ti);
      out.leaf_index[2 * row + 1] = s.leaves[j];
    }
  }
}

int64_t packed_size(const TreeList& trees) {
  int64_t total = 0;
  for (const TrajectoryTree* t : trees) total += t->num_tokens(true);
  return total;
}

void pack(const TreeList& trees, const AdvList& adv, Credit credit, Agg agg, const PackedOut& out) {
  const std::vector<TreeStats> stats = all_stats(trees, adv, credit);
  const AggNorm norm = agg_norm(stats, agg);
  int64_t base = 0;
  out.tree_offsets[0] = 0;
  for (size_t ti = 0; ti < trees.size(); ++ti) {
    const NodeSums ns = node_sums(*trees[ti], stats[ti], credit, norm);
    pack_tree(*trees[ti], ns, base, out);
    base += trees[ti]->num_tokens(true);
    out.tree_offsets[ti + 1] = base;
  }
}

}  // namespace arpo
