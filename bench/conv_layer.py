"""One convolution (+ bias + Clip) alone, one engine per process, IOBinding; prints the p10
latency and GFLOP/s. The per-layer figures in the README come from it, engines alternated:
`python -m bench.conv_layer ember|ort CIN H COUT K STRIDE GROUPS THREADS`."""
import sys, time, numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
eng, cin, h, cout, k, s, groups, th = sys.argv[1], *map(int, sys.argv[2:9])
rng = np.random.default_rng(0)
w = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32) * 0.1
b = rng.standard_normal(cout).astype(np.float32)
nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4, strides=[s, s], group=groups),
         helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, h])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                      [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
                       numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
x = rng.standard_normal((1, cin, h, h)).astype(np.float32)
if eng == "ember":
    import ember
    so = ember.SessionOptions(); so.intra_op_num_threads = th
    sess = ember.InferenceSession(m.SerializeToString(), so)
else:
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = th; so.inter_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
ho = (h + 2 * (k // 2) - k) // s + 1
out = np.empty((1, cout, ho, ho), np.float32)
bd = sess.io_binding()
if eng == "ember":
    bd.bind_cpu_input("x", x); bd.bind_output_array("y", out)
    go = lambda: sess.run_with_iobinding(bd)
else:
    bd.bind_cpu_input("x", x); bd.bind_output("y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
    go = lambda: sess.run_with_iobinding(bd)
for _ in range(20): go()
ts = []
t_end = time.perf_counter() + 1.5
while time.perf_counter() < t_end:
    t = time.perf_counter(); go(); ts.append(time.perf_counter() - t)
ho = (h + 2 * (k // 2) - k) // s + 1
fl = 2 * cout * (cin // groups) * k * k * ho * ho
med = np.percentile(ts, 10) * 1e3
print(f"{eng} {cin}->{cout} k{k} s{s} g{groups} @{h}: {med:.3f} ms  {fl / med / 1e6:.1f} GF/s")
