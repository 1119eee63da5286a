// Python <-> core glue for the pybind11 module: input validation of Python objects, numpy output
// allocation, the dict form of a tree, and the batch builders returning dicts of numpy arrays.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "traj_tree.h"

namespace arpo::glue {
namespace py = pybind11;

using IdArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using LpArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

// Keeps converted numpy buffers alive while the core reads the Segment view.
struct SegmentArgs {
  IdArray ids;
  LpArray lp;
  bool has_lp = false;
  Segment view() const {
    return Segment{ids.data(), static_cast<size_t>(ids.size()), has_lp ? lp.data() : nullptr,
                   has_lp ? static_cast<size_t>(lp.size()) : 0};
  }
};

inline py::array as_1d(py::handle obj, const char* name) {
  py::array arr = py::array::ensure(obj);
  if (!arr) throw py::type_error(std::string(name) + " must be a 1-D sequence of numbers");
  if (arr.ndim() != 1)
    throw py::value_error(std::string(name) + " must be 1-D, got " + std::to_string(arr.ndim()) + " dimensions");
  return arr;
}

// A 1-D C-contiguous array of exactly the wanted dtype (what the samplers pass) is used as it is.
template <typename A>
bool borrow_exact(py::handle obj, A* out) {
  if (!py::isinstance<A>(obj)) return false;
  A arr = py::reinterpret_borrow<A>(obj);
  if (arr.ndim() != 1) return false;
  *out = std::move(arr);
  return true;
}

// Any other input is converted like np.asarray after checking its kind ("iu" or "fiu").
template <typename A>
A convert(py::handle obj, const char* name, const char* kinds, const char* what) {
  py::array arr = as_1d(obj, name);
  const char kind = arr.dtype().kind();
  if (arr.size() > 0 && std::string(kinds).find(kind) == std::string::npos)
    throw py::type_error(std::string(name) + " must be " + what + ", got dtype " + std::string(py::str(arr.dtype())));
  return A::ensure(arr);
}

inline SegmentArgs segment_args(py::handle ids, py::handle logprobs) {
  SegmentArgs a;
  if (!borrow_exact(ids, &a.ids)) a.ids = convert<IdArray>(ids, "token ids", "iu", "integers");
  if (!logprobs.is_none()) {
    if (!borrow_exact(logprobs, &a.lp)) a.lp = convert<LpArray>(logprobs, "logprobs", "fiu", "real numbers");
    a.has_lp = true;
  }
  return a;
}

inline TrajectoryTree make_tree(py::handle prompt_ids) {
  SegmentArgs a = segment_args(prompt_ids, py::none());
  return TrajectoryTree(a.view());
}

inline int32_t add(TrajectoryTree& t, int64_t parent, py::handle ids, bool trainable, py::handle logprobs) {
  SegmentArgs a = segment_args(ids, logprobs);
  return t.add(parent, a.view(), trainable);
}

inline void extend(TrajectoryTree& t, int64_t node, py::handle ids, py::handle logprobs) {
  SegmentArgs a = segment_args(ids, logprobs);
  t.extend(node, a.view());
}

inline py::array_t<int32_t> tokens(const TrajectoryTree& t, int64_t id) {
  const auto& v = t.node(id).tokens;
  return py::array_t<int32_t>(static_cast<py::ssize_t>(v.size()), v.data());
}

inline py::object logprobs(const TrajectoryTree& t, int64_t id) {
  const Node& nd = t.node(id);
  if (nd.has_logprobs != 1) return py::none();
  return py::array_t<float>(static_cast<py::ssize_t>(nd.logprobs.size()), nd.logprobs.data());
}

inline py::object reward(const TrajectoryTree& t, int64_t id) {
  const Node& nd = t.node(id);
  return nd.has_reward ? py::object(py::float_(nd.reward)) : py::object(py::none());
}

inline py::array_t<double> to_numpy(const std::vector<double>& v) {
  return py::array_t<double>(static_cast<py::ssize_t>(v.size()), v.data());
}

// One advantage array as doubles (any 1-D real sequence, converted like np.asarray(x, float64)).
inline std::vector<double> adv_vector(py::handle obj, const std::string& name) {
  LpArray a;
  if (!borrow_exact(obj, &a)) a = convert<LpArray>(obj, name.c_str(), "fiu", "real numbers");
  return std::vector<double>(a.data(), a.data() + a.size());
}

inline py::array_t<double> node_advantages(const TrajectoryTree& t, py::handle leaf_advantages) {
  return to_numpy(t.node_advantages(adv_vector(leaf_advantages, "leaf_advantages")));
}

py::dict to_dict(const TrajectoryTree& t);
TrajectoryTree from_dict(const py::dict& d);
TreeList tree_list(const py::sequence& trees);
AdvList adv_list(py::handle leaf_advantages);
py::dict flatten_trees(const py::sequence& trees, py::handle leaf_advantages, const std::string& credit,
                       int64_t pad_id);
py::dict pack_trees(const py::sequence& trees, py::handle leaf_advantages, const std::string& credit,
                    const std::string& agg);

}  // namespace arpo::glue
