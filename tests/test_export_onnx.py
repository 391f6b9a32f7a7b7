"""ONNX export (``vs-hdrvid export-onnx``) and the runtime wrapper, on tiny random networks.

The torch-only tests check each rewrite the graphs make (the deformable convolution from
GridSample, the masked window attention without a loop, whole graphs against the modules' own
forward); the export tests write real ONNX files and run them through onnxruntime (and OpenVINO
where installed) against torch in fp32. A whole DeAltHDR graph takes about a minute to export on
two cores, so here only its attention runs in onnxruntime; ``vs-hdrvid export-onnx dealthdr-2exp``
checks the whole network (docs/onnx.md has its figures).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import math
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vs_hdrvid import weights as weights_mod
from vs_hdrvid.cli import main
from vs_hdrvid.eval.bench_nets import network_configs
from vs_hdrvid.export import runtime
from vs_hdrvid.export.graphs import build_graph, layout
from vs_hdrvid.export.onnx import export_graph
from vs_hdrvid.export.rewrites import window_attention
from vs_hdrvid.export.onnx import sample_window
from vs_hdrvid.models.coarsenet import CoarseNetConfig
from vs_hdrvid.models.dealthdr import DeAltHDRConfig
from vs_hdrvid.models.fgma import masked_window_attention
from vs_hdrvid.models.spynet import PairSpyNetConfig

TOL = 1e-3


def _randomise(model: torch.nn.Module, std: float, seed: int) -> torch.nn.Module:
    """Every parameter random, the zero-initialised heads included: the output depends on all of it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def _tiny(kind: str) -> torch.nn.Module:
    if kind == "coarse":
        d = network_configs(2, narrow=True)["coarse"].to_dict()
        d["flow"]["levels"] = 2  # the SpyNet stays (GridSample in the graph), two levels
        config = CoarseNetConfig.from_dict(d)
    elif kind == "refine":
        config = network_configs(2, narrow=True)["refine"]
    else:
        config = DeAltHDRConfig(dim=8, enc_blocks=(1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1),
                                heads=(1, 1, 1, 2), expansion=1.0, window=3,
                                flow=PairSpyNetConfig(levels=2, channels=(8, 8), kernel_size=3))
    model = weights_mod.build_network(kind, config.to_dict())
    std = {"coarse": 0.02, "refine": 0.05, "dealthdr": 0.05}[kind]
    model = _randomise(model, std, seed=len(kind)).eval().requires_grad_(False)
    if kind == "dealthdr":  # FGMA's attention weighs on the output, so that a wrong attention shows
        for module in model.modules():
            if type(module).__name__ == "FGMA":
                module.proj_v.weight.mul_(40)
                module.bias.mul_(20)
    return model


@pytest.fixture(scope="module")
def nets() -> dict[str, torch.nn.Module]:
    return {kind: _tiny(kind) for kind in ("coarse", "refine", "dealthdr")}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, nets):
    folder = tmp_path_factory.mktemp("weights")
    for kind, model in nets.items():
        weights_mod.write(model, f"{kind}-2exp", folder, recipe={"training": "none: random (tests)"})
    return folder


# ---------------------------------------------------------------- the rewrites, in torch


def test_deform_op_graph_runs_onnx_deformconv(nets, tmp_path):
    """deform="op": torchvision's deformable convolution, as ONNX DeformConv (onnxruntime's CPU kernel)."""
    import onnx

    graph = build_graph(nets["refine"], "refine", "hdr", deform="op")
    x = sample_window(graph, (40, 32), 2)
    with torch.no_grad():  # torchvision's kernel against the network's own GridSample arithmetic
        assert (graph(x) - graph.reference(nets["refine"], x)).abs().max() < 1e-5
    align = graph.net.align  # one deformable convolution of the graph, exported alone (the whole takes long)
    dcn = align.dcn[0]

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dcn = dcn

        def forward(self, x):
            return self.dcn(x[:, :16], x[:, 16:])

    one = One().eval()
    one.channels, one.kind, one.outputs = 32, "refine", "hdr"
    path = export_graph(one, tmp_path / "dcn.onnx", (20, 16), deform="op", optimize=False)
    assert "DeformConv" in {n.op_type for n in onnx.load(path).graph.node}
    y = torch.randn(1, 32, 16, 20, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = one(y).numpy()
    assert np.abs(_ort(path, y) - want).max() < 1e-4


def test_window_attention_equals_masked_attention():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 8, 9, 10, generator=gen) for _ in range(3))
    flow = torch.randn(2, 2, 9, 10, generator=gen) * 4
    bias = torch.randn(2, 25, generator=gen)
    proj = torch.nn.Conv2d(8, 8, 1)
    for mask in ((torch.rand(2, 1, 9, 10, generator=gen) > 0.6).float(), torch.zeros(2, 1, 9, 10)):
        want = masked_window_attention(q, k, v, flow, mask, 2, 5, bias, q_proj=proj)
        got = window_attention(q, k, v, flow, 2, 5, bias, mask, q_proj=proj)
        assert (got - want).abs().max() < 1e-5
    everywhere = masked_window_attention(q, k, v, flow, torch.ones(2, 1, 9, 10), 2, 5, bias, q_proj=proj)
    assert (window_attention(q, k, v, flow, 2, 5, bias, None, q_proj=proj) - everywhere).abs().max() < 1e-5


@pytest.mark.parametrize("kind, options", [("coarse", {}), ("refine", {"deform": "grid"}),
                                           ("dealthdr", {"s": 15.0}), ("dealthdr", {"s": math.inf}),
                                           ("dealthdr", {"s": 0.0})])
def test_graph_equals_module_forward(nets, kind, options):
    graph = build_graph(nets[kind], kind, "all", **options)
    x = sample_window(graph, (40, 32), 2)
    with torch.no_grad():
        got, want = graph(x), graph.reference(nets[kind], x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g - w).abs().max() <= 1e-5 * max(1.0, float(w.abs().max()))
    if kind == "dealthdr" and options["s"] == 15.0:
        assert 0 < float(got[1]) < 1  # some pixels, not all, went through the attention


@pytest.mark.parametrize("s", [15.0, math.inf])
def test_graph_of_the_residual_fgma_design_equals_module_forward(s):
    config = DeAltHDRConfig.from_dict({**_tiny("dealthdr").config.to_dict(), "attention_residual": True})
    model = _randomise(weights_mod.build_network("dealthdr", config.to_dict()), 0.05, seed=3).eval().requires_grad_(False)
    for module in model.modules():
        if type(module).__name__ == "FGMA":
            module.proj_o.weight.mul_(40)
            module.bias.mul_(20)
    graph = build_graph(model, "dealthdr", "all", s=s)
    x = sample_window(graph, (40, 32), 2)
    with torch.no_grad():
        got, want = graph(x), graph.reference(model, x)
    for g, w in zip(got, want):
        assert (g - w).abs().max() <= 1e-5 * max(1.0, float(w.abs().max()))


def _module_args(kind: str) -> tuple:
    """A call of each network's forward, with LDR frames, exposures (and for CoarseNet flows)."""
    gen = torch.Generator().manual_seed(6)
    if kind == "coarse":
        ldrs, evs = torch.rand(1, 3, 3, 32, 40, generator=gen), torch.tensor([[1.5, -1.5, 1.5]])
        return ldrs, evs, torch.randn(1, 2, 2, 32, 40, generator=gen) * 2, torch.rand(1, 2, 1, 32, 40, generator=gen)
    if kind == "refine":
        ldrs, evs = torch.rand(1, 3, 3, 32, 40, generator=gen), torch.tensor([[1.5, -1.5, 1.5]])
        return torch.rand(1, 3, 3, 32, 40, generator=gen) * 2, ldrs, evs
    return torch.rand(1, 5, 3, 32, 40, generator=gen), torch.tensor([[-1.5, 1.5, -1.5, 1.5, -1.5]]), 15.0


@pytest.mark.parametrize("kind", ["coarse", "refine", "dealthdr"])
def test_graph_of_packed_planes_equals_module_call(nets, kind):
    """The planes OnnxNetwork packs from a module call, unpacked by the graph, give that call's output."""
    args = _module_args(kind)
    wrapper = runtime.OnnxNetwork(nets[kind], kind, backend="ort")
    x, options = wrapper._pack(args, {})
    graph = build_graph(nets[kind], kind, "all", **options)
    assert x.shape[1] == graph.channels
    with torch.no_grad():
        got, want = graph(x), nets[kind](*args)
    want = (want.hdr, torch.tensor(want.attention_ratio), want.flows) if kind == "dealthdr" else tuple(want)
    for g, w in zip(got, want):
        assert (g - w).abs().max() <= 1e-4 * max(1.0, float(w.abs().max()))


# ---------------------------------------------------------------- export and check


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (status, stdout, stderr); the root logger is restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors exit from inside main, as the entry point would
        status = e.code
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    out, err = capsys.readouterr()
    return status, out, err


def _ort(path, x: torch.Tensor) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]


def test_cli_export_writes_files_and_report(weights_dir, nets, tmp_path, capsys):
    out = tmp_path / "onnx"
    status, stdout, _ = _cli(["export-onnx", "refine-2exp", "-o", out, "--size", "48x40", "--weights", weights_dir],
                             capsys)
    assert status == 0 and "wrote" in stdout
    report = json.loads((out / "report.json").read_text())
    (item,) = report["files"]
    assert (out / item["file"]).is_file() and item["file"] == "refine-2exp.onnx"
    assert report["size"] == "48x40" and item["input"] == [1, 21, 40, 48]
    assert [p["name"] for p in item["layout"]] == ["coarse_hdr", "radiance", "ev"]
    assert item["check"]["passed"] and item["check"]["ort"]["max_abs"] <= TOL
    # the file on another window of that size equals torch, and the network did change its input
    graph = build_graph(nets["refine"], "refine", "hdr")
    x = sample_window(graph, (48, 40), 2) * 0.7
    x[:, -3:] = sample_window(graph, (48, 40), 2)[:, -3:]  # the EV planes as they were
    want = graph.reference(nets["refine"], x).numpy()
    got = _ort(out / item["file"], x)
    assert got.shape == (1, 3, 40, 48) and np.abs(got - want).max() <= TOL
    assert np.abs(got - x[:, 3:6].numpy()).max() > 1e-2  # not the reference's coarse HDR passed through


def test_runtime_coarse_equals_torch_and_caches(nets, tmp_path, monkeypatch):
    model = nets["coarse"]
    gen = torch.Generator().manual_seed(3)
    ldrs, evs = torch.rand(1, 3, 3, 40, 48, generator=gen), torch.tensor([[1.5, -1.5, 1.5]])
    flows, conf = torch.randn(1, 2, 2, 40, 48, generator=gen) * 2, torch.rand(1, 2, 1, 40, 48, generator=gen)
    hdrs = ldrs.pow(2.2) * torch.exp2(-evs).view(1, 3, 1, 1, 1)
    net = runtime.OnnxNetwork(model, "coarse", backend="ort", device="cpu", cache=tmp_path)
    got, want = net(ldrs, evs, flows, conf, hdrs), model(ldrs, evs, flows, conf, hdrs)
    assert type(got) is type(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and (g - w).abs().max() <= TOL
    assert len(list(tmp_path.glob("coarse-*-48x40.onnx"))) == 1
    monkeypatch.setattr("vs_hdrvid.export.onnx.export_graph", lambda *a, **k: pytest.fail("exported again"))
    backends = ["ort"] + (["ov"] if importlib.util.find_spec("openvino") else [])
    for backend in backends:  # a new wrapper of the same weights loads the cached file
        again = runtime.OnnxNetwork(model, "coarse", backend=backend, cache=tmp_path)(ldrs, evs, flows, conf, hdrs)
        assert (again.hdr - want.hdr).abs().max() <= TOL


def test_window_attention_graph_runs_any_mask(tmp_path):
    """NonZero in onnxruntime: the masked set changes per call and may be empty; the sizes are symbolic."""

    class Attention(torch.nn.Module):
        def forward(self, q, k, v, flow, mask):
            return window_attention(q, k, v, flow, 2, 3, None, mask)

    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 4, 8, 10, generator=gen) for _ in range(3))
    flow = torch.randn(1, 2, 8, 10, generator=gen) * 2
    args = (q, k, v, flow, (torch.rand(1, 1, 8, 10, generator=gen) > 0.5).float())
    path = tmp_path / "attention.onnx"
    h, w = torch.export.Dim("h", min=4, max=64), torch.export.Dim("w", min=4, max=64)
    dims = tuple({2: h, 3: w} for _ in args)  # symbolic sizes, as a --dynamic DeAltHDR has them
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(Attention().eval(), args, path, dynamo=True, external_data=False, optimize=False,
                          dynamic_shapes=dims)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for density, (hh, ww) in ((0.0, (8, 10)), (0.3, (8, 10)), (1.0, (8, 10)), (0.3, (13, 6))):
        q, k, v = (torch.randn(1, 4, hh, ww, generator=gen) for _ in range(3))
        flow = torch.randn(1, 2, hh, ww, generator=gen) * 2
        mask = (torch.rand(1, 1, hh, ww, generator=gen) < density).float()
        feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), (q, k, v, flow, mask))}
        want = masked_window_attention(q, k, v, flow, mask, 2, 3)
        assert np.abs(session.run(None, feeds)[0] - want.numpy()).max() < 1e-5


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("argv, words", [
    (["no-such-net"], ["unknown network 'no-such-net'", "coarse-2exp"]),
    (["coarse-2exp", "--size", "16x16"], ["16x16", "smaller"]),
    (["coarse-2exp", "--size", "big"], ["1280x720"]),
    (["coarse-2exp", "--dynamic"], ["fixed size", "_box_mean", "--size"]),
    (["refine-2exp", "--dynamic", "--s", "-1"], ["--s", ">= 0"]),
])
def test_cli_errors(weights_dir, tmp_path, capsys, argv, words):
    status, _, err = _cli(["export-onnx", argv[0], "-o", tmp_path / "o", "--weights", weights_dir, *argv[1:]], capsys)
    assert status == 2
    assert err.startswith("vs-hdrvid: error:") and all(w in err for w in words)
    assert not (tmp_path / "o").exists()


def test_cli_missing_weights(tmp_path, capsys):
    status, _, err = _cli(["export-onnx", "coarse-3exp", "-o", tmp_path / "o", "--weights", tmp_path], capsys)
    assert status == 2
    assert "coarse_3exp.safetensors is missing" in err and "vs-hdrvid train coarse" in err


@pytest.mark.parametrize("backend, package", [("ort", "pip install onnxruntime"), ("ov", "pip install openvino")])
def test_backend_not_installed(monkeypatch, backend, package):
    real = importlib.import_module

    def missing(name, *args):
        if name in ("onnxruntime", "openvino"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(runtime.importlib, "import_module", missing)
    with pytest.raises(runtime.BackendError, match=package):
        runtime.resolve_backend(backend)
    with pytest.raises(runtime.BackendError, match=package):
        runtime.OnnxNetwork(_tiny("refine"), "refine", backend=backend)


def test_backend_trt_without_tensorrt_provider(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(runtime.BackendError, match="onnxruntime-gpu tensorrt"):
        runtime.resolve_backend("trt", "cuda")
    with pytest.raises(runtime.BackendError, match="onnxruntime-gpu"):
        runtime.resolve_backend("ort", "cuda")
    with pytest.raises(ValueError, match="ort, ov, trt"):
        runtime.resolve_backend("tensorrt")


def test_layout_names_every_plane(nets):
    for kind, model in nets.items():
        planes = layout(model, kind)
        assert planes[0].start == 0 and planes[-1].name == "ev"
        assert all(a.stop == b.start for a, b in zip(planes, planes[1:]))
        assert build_graph(model, kind).channels == planes[-1].stop
