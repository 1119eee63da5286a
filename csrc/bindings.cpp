// pybind11 module `arpo._tree`: the C++ TrajectoryTree and batch builders. Definitions only; the glue is in
// py_glue.{h,cpp} and the logic in traj_tree.{h,cpp}. The documented API is arpo/tree/py_tree.py.
#include "py_glue.h"

namespace py = pybind11;
using arpo::TrajectoryTree;
namespace g = arpo::glue;

PYBIND11_MODULE(_tree, m) {
  m.doc() = "C++17 core of arpo.tree (see arpo/tree/py_tree.py for the documented API)";
  py::class_<TrajectoryTree>(m, "TrajectoryTree")
      .def(py::init(&g::make_tree), py::arg("prompt_ids"))
      .def("add", &g::add, py::arg("parent"), py::arg("token_ids"), py::arg("trainable"), py::arg("logprobs") = py::none())
      .def("extend", &g::extend, py::arg("node"), py::arg("token_ids"), py::arg("logprobs") = py::none())
      .def("set_reward", &TrajectoryTree::set_reward, py::arg("leaf"), py::arg("reward"))
      .def("reward", &g::reward, py::arg("node"))
      .def("leaves", &TrajectoryTree::leaves)
      .def("path", &TrajectoryTree::path, py::arg("leaf"))
      .def("num_tokens", &TrajectoryTree::num_tokens, py::arg("unique") = true)
      .def_property_readonly("num_nodes", &TrajectoryTree::num_nodes)
      .def("parent", [](const TrajectoryTree& t, int64_t n) { return t.node(n).parent; }, py::arg("node"))
      .def("children", [](const TrajectoryTree& t, int64_t n) { return t.node(n).children; }, py::arg("node"))
      .def("is_trainable", [](const TrajectoryTree& t, int64_t n) { return t.node(n).trainable; }, py::arg("node"))
      .def("offset", [](const TrajectoryTree& t, int64_t n) { return t.node(n).offset; }, py::arg("node"))
      .def("tokens", &g::tokens, py::arg("node"))
      .def("logprobs", &g::logprobs, py::arg("node"))
      .def("leaf_rewards", [](const TrajectoryTree& t) { return g::to_numpy(t.leaf_rewards()); })
      .def("node_advantages", &g::node_advantages, py::arg("leaf_advantages"))
      .def("to_dict", &g::to_dict)
      .def_static("from_dict", &g::from_dict, py::arg("data"))
      .def(py::pickle(&g::to_dict, &g::from_dict))
      .def("__repr__", [](const TrajectoryTree& t) {
        return "TrajectoryTree(nodes=" + std::to_string(t.num_nodes()) + ", leaves=" + std::to_string(t.leaves().size()) +
               ", tokens=" + std::to_string(t.num_tokens(true)) + ")";
      });
  m.def("flatten_trees", &g::flatten_trees, py::arg("trees"), py::arg("leaf_advantages"), py::arg("credit") = "soft",
        py::arg("pad_id") = 0);
  m.def("pack_trees", &g::pack_trees, py::arg("trees"), py::arg("leaf_advantages"), py::arg("credit") = "soft",
        py::arg("agg") = "token-mean");
}
