// Dict form of a tree and the numpy-returning batch builders (see py_glue.h).
#include "py_glue.h"

#include <set>
#include <stdexcept>

namespace arpo::glue {
namespace {

template <typename T>
T* alloc(py::dict& out, const char* name, std::vector<py::ssize_t> shape) {
  py::array_t<T> arr(shape);
  out[name] = arr;
  return arr.mutable_data();
}

py::list to_list(const std::vector<int32_t>& v) {
  py::list out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = py::int_(v[i]);
  return out;
}

py::object item(const py::dict& d, const char* key, const std::string& where) {
  if (!d.contains(key)) throw py::value_error(where + " is missing key '" + key + "'");
  return d[key];
}

void check_keys(const py::dict& d, const std::set<std::string>& valid, const std::string& where) {
  for (auto kv : d) {
    const std::string k = py::str(kv.first);
    if (!valid.count(k)) throw py::value_error(where + " has unknown key '" + k + "'");
  }
}

}  // namespace

py::dict to_dict(const TrajectoryTree& t) {
  py::dict d;
  d["prompt"] = to_list(t.node(0).tokens);
  py::list nodes;
  for (int32_t i = 1; i < t.num_nodes(); ++i) {
    const Node& nd = t.node(i);
    py::dict n;
    n["parent"] = nd.parent;
    n["tokens"] = to_list(nd.tokens);
    n["trainable"] = nd.trainable;
    n["logprobs"] = nd.has_logprobs == 1 ? py::object(py::cast(std::vector<double>(nd.logprobs.begin(), nd.logprobs.end())))
                                         : py::object(py::none());
    n["reward"] = reward(t, i);
    nodes.append(n);
  }
  d["nodes"] = nodes;
  return d;
}

TrajectoryTree from_dict(const py::dict& d) {
  check_keys(d, {"prompt", "nodes"}, "tree dict");
  TrajectoryTree t = make_tree(item(d, "prompt", "tree dict"));
  const py::list nodes = item(d, "nodes", "tree dict").cast<py::list>();
  std::vector<py::object> rewards;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const std::string where = "tree dict node " + std::to_string(i + 1);
    const py::dict n = nodes[i].cast<py::dict>();
    check_keys(n, {"parent", "tokens", "trainable", "logprobs", "reward"}, where);
    const py::object parent_obj = item(n, "parent", where);
    if (!py::isinstance<py::int_>(parent_obj) || py::isinstance<py::bool_>(parent_obj))
      throw py::value_error(where + " key 'parent' must be an int");
    const py::object trainable = item(n, "trainable", where);
    if (!py::isinstance<py::bool_>(trainable)) throw py::value_error(where + " key 'trainable' must be a bool");
    const auto parent = parent_obj.cast<int64_t>();
    if (parent < 0 || parent > static_cast<int64_t>(i))
      throw py::value_error(where + " has parent " + std::to_string(parent) + ": a parent must come before its child");
    add(t, parent, item(n, "tokens", where), trainable.cast<bool>(), item(n, "logprobs", where));
    rewards.push_back(item(n, "reward", where));
  }
  for (size_t i = 0; i < rewards.size(); ++i) {
    if (!rewards[i].is_none()) t.set_reward(static_cast<int64_t>(i + 1), rewards[i].cast<double>());
  }
  return t;
}

TreeList tree_list(const py::sequence& trees) {
  TreeList out;
  out.reserve(trees.size());
  for (size_t i = 0; i < trees.size(); ++i) {
    py::handle h = trees[i];
    if (!py::isinstance<TrajectoryTree>(h))
      throw py::type_error("trees[" + std::to_string(i) + "] is a " + std::string(py::str(h.get_type().attr("__name__"))) +
                           ", not an arpo._tree.TrajectoryTree (do not mix the C++ and Python implementations)");
    out.push_back(h.cast<const TrajectoryTree*>());
  }
  return out;
}

AdvList adv_list(py::handle leaf_advantages) {
  if (!py::isinstance<py::list>(leaf_advantages) && !py::isinstance<py::tuple>(leaf_advantages) &&
      !py::isinstance<py::array>(leaf_advantages))
    throw py::type_error("leaf_advantages must be a list of arrays (one per tree), got a " +
                         std::string(py::str(py::type::handle_of(leaf_advantages).attr("__name__"))));
  AdvList out;
  const py::sequence seq = py::reinterpret_borrow<py::sequence>(leaf_advantages);
  for (size_t i = 0; i < seq.size(); ++i)
    out.push_back(adv_vector(seq[i], "leaf_advantages[" + std::to_string(i) + "]"));
  return out;
}

py::dict flatten_trees(const py::sequence& trees, py::handle leaf_advantages, const std::string& credit,
                       int64_t pad_id) {
  const TreeList list = tree_list(trees);
  const Credit c = parse_credit(credit);
  const AdvList adv = adv_list(leaf_advantages);
  int64_t rows = 0, width = 0;
  flat_shape(list, &rows, &width);
  py::dict d;
  FlatOut out{width,
              alloc<int64_t>(d, "input_ids", {rows, width}),      alloc<int64_t>(d, "attention_mask", {rows, width}),
              alloc<int64_t>(d, "position_ids", {rows, width}),   alloc<bool>(d, "loss_mask", {rows, width}),
              alloc<float>(d, "advantages", {rows, width}),       alloc<float>(d, "old_logprobs", {rows, width}),
              alloc<int64_t>(d, "leaf_index", {rows, 2})};
  flatten(list, adv, c, pad_id, out);  // GIL held: no other thread may grow the trees meanwhile
  return d;
}

py::dict pack_trees(const py::sequence& trees, py::handle leaf_advantages, const std::string& credit,
                    const std::string& agg) {
  const TreeList list = tree_list(trees);
  const Credit c = parse_credit(credit);
  const Agg a = parse_agg(agg);
  const AdvList adv = adv_list(leaf_advantages);
  const int64_t n = packed_size(list);
  py::dict d;
  PackedOut out{alloc<int64_t>(d, "input_ids", {n}),   alloc<int64_t>(d, "position_ids", {n}),
                alloc<int64_t>(d, "prev_index", {n}),  alloc<int64_t>(d, "span_end", {n}),
                alloc<bool>(d, "loss_mask", {n}),      alloc<float>(d, "loss_weight", {n}),
                alloc<float>(d, "weight_pos", {n}),    alloc<float>(d, "weight_neg", {n}),
                alloc<float>(d, "adv_pos", {n}),       alloc<float>(d, "adv_neg", {n}),
                alloc<float>(d, "old_logprobs", {n}),
                alloc<int64_t>(d, "tree_offsets", {static_cast<py::ssize_t>(list.size()) + 1})};
  pack(list, adv, c, a, out);  // GIL held: no other thread may grow the trees meanwhile
  return d;
}

}  // namespace arpo::glue
