"""Run a network through onnxruntime, OpenVINO or TensorRT in place of its torch module.

:class:`OnnxNetwork` is called like the torch module it wraps and returns the same output type
(``CoarseOutput``, ``RefineOutput``, ``DeAltHDROutput``), so that a node can swap it in for
``backend="ort"|"ov"|"trt"``. On the first call for a frame size (and, for DeAltHDR, a pattern of
short frames, a sensitivity and whether flows are given) it exports the graph of
:mod:`vs_hdrvid.export.graphs` with every output, checks it against the module on that call's
inputs (at most 1e-3 apart in fp32) and caches the file under the user cache folder
(``$HDRVID_CACHE``, else ``$XDG_CACHE_HOME/vs-hdrvid/onnx``, else ``~/.cache/vs-hdrvid/onnx``),
keyed by the weights' values, so later processes load it at once.

Backends:
    - ``"ort"``: onnxruntime, CPU provider (``device`` cpu) or CUDA provider (cuda:N,
      ``pip install onnxruntime-gpu``).
    - ``"ov"``: OpenVINO on its CPU device, in f32 (its CPU default on bf16-capable processors is
      bf16, about 1e-2 from torch).
    - ``"trt"``: onnxruntime's TensorRT execution provider (``pip install onnxruntime-gpu tensorrt``);
      nodes it cannot build fall back to the CUDA provider.

Example::

    net = OnnxNetwork(model, "coarse", backend="ort", device="cpu")
    out = net(ldrs, evs, init_flows, init_conf, hdrs)   # CoarseOutput, as model(...) gives
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .graphs import KINDS, build_graph, layout, output_names

__all__ = ["BACKENDS", "Backend", "BackendError", "resolve_backend", "cache_dir", "OnnxNetwork"]

log = logging.getLogger("vs_hdrvid")

BACKENDS = ("ort", "ov", "trt")


class BackendError(RuntimeError):
    """A runtime that is not installed or cannot run on the device; the message names what to install."""


@dataclass(frozen=True)
class Backend:
    """A resolved runtime: ``name`` (``ort``, ``ov``, ``trt``) and the module that runs it."""

    name: str
    module: object

    def providers(self, device: torch.device) -> list:
        """onnxruntime execution providers for ``device`` (``ort`` and ``trt`` only)."""
        index = device.index or 0
        if self.name == "trt":
            return [("TensorrtExecutionProvider", {"device_id": index}),
                    ("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        if device.type == "cuda":
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]


_INSTALL = {"ort": "onnxruntime (pip install onnxruntime; onnxruntime-gpu for CUDA)",
            "ov": "openvino (pip install openvino)",
            "trt": "onnxruntime-gpu with TensorRT (pip install onnxruntime-gpu tensorrt)"}


def resolve_backend(name: str, device: torch.device | str = "cpu") -> Backend:
    """The runtime ``name`` for ``device``, checked to be installed and able to run there.

    Raises:
        ValueError: ``name`` is not one of :data:`BACKENDS`.
        BackendError: its package is missing, or it has no provider for ``device``; the message
            names the pip package to install.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    device = torch.device(device)
    package = "openvino" if name == "ov" else "onnxruntime"
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError:
        raise BackendError(f"backend={name!r} needs {_INSTALL[name]}, which is not installed") from None
    except ImportError as e:  # installed but broken, or another copy of its libraries loaded first
        why = " ".join(str(e).split())[:300]
        hint = (" (vapoursynth-mlrt-ov's plugin loads its own OpenVINO into every VapourSynth process: use "
                "core.ov.Model there, or uninstall that plugin)" if name == "ov" else "")
        raise BackendError(f"backend={name!r}: {package} is installed but does not import: {why}{hint}") from None
    if name == "ov":
        if device.type != "cpu":
            raise BackendError(f"backend='ov' runs on the CPU here, not on {device}; use device='cpu' or "
                               "backend='ort'/'trt' for CUDA")
        return Backend(name, module)
    available = module.get_available_providers()
    want = {"trt": "TensorrtExecutionProvider", "ort": "CUDAExecutionProvider" if device.type == "cuda" else
            "CPUExecutionProvider"}[name]
    if want not in available:
        install = "pip install onnxruntime-gpu tensorrt" if name == "trt" else "pip install onnxruntime-gpu"
        raise BackendError(f"backend={name!r} on {device} needs onnxruntime's {want}, which this onnxruntime "
                           f"lacks (it has {', '.join(available)}): {install}")
    if name == "trt" and device.type != "cuda":
        raise BackendError("backend='trt' runs on CUDA devices only; give device='cuda[:N]'")
    return Backend(name, module)


def cache_dir() -> Path:
    """Where exported graphs are kept between runs."""
    if os.environ.get("HDRVID_CACHE"):
        return Path(os.environ["HDRVID_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vs-hdrvid" / "onnx"


def _digest(model: nn.Module) -> str:
    """sha256 of the network's config and parameter values (the cache key of its graphs)."""
    h = hashlib.sha256(repr(model.config).encode())
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class OnnxNetwork:
    """A CoarseNet, RefineNet or DeAltHDR run by onnxruntime, OpenVINO or TensorRT.

    Args:
        model: the loaded torch network (``weights.load`` or ``build_network``); it is not changed,
            and computes the check of each new graph.
        kind: ``"coarse"``, ``"refine"`` or ``"dealthdr"``.
        backend: ``"ort"``, ``"ov"`` or ``"trt"`` (:func:`resolve_backend`).
        device: where the inputs live and the runtime runs (``"cpu"``, ``"cuda[:N]"``).
        cache: the folder of exported graphs (default :func:`cache_dir`).
        deform: RefineNet's deformable convolution: ``"grid"`` (the network's own GridSample
            arithmetic, every runtime) or ``"op"`` (ONNX DeformConv, onnxruntime's CPU provider).
        check: compare each new graph with the torch module on its first inputs (raises
            RuntimeError beyond 1e-3).

    Call:
        exactly as the module: ``(ldrs, evs, init_flows=None, init_conf=None, hdrs=None)`` for
        CoarseNet, ``(hdrs, ldrs, evs)`` for RefineNet, ``(ldrs, evs, s=15.0, flows=None)`` for
        DeAltHDR, with the same shapes, returning the same output type on ``device`` in the
        inputs' dtype (the graphs compute in fp32). The graphs take the window's linear radiance
        and make the LDR frames from it, as the nodes do: where a call gives ``ldrs``, the
        radiance passed on is ``ldr_to_hdr(ldrs, evs)`` (CoarseNet: ``hdrs`` when given), which
        gives back ``ldrs`` to within rounding. A batch is run one sample at a time.

    Raises:
        ValueError: an unknown kind or backend; BackendError: the runtime is missing.
    """

    def __init__(self, model: nn.Module, kind: str, backend: str = "ort", device: torch.device | str = "cpu",
                 cache: str | os.PathLike | None = None, deform: str = "grid", check: bool = True) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.device = torch.device(device)
        self.backend = resolve_backend(backend, self.device)
        self.model, self.kind, self.check = model, kind, check
        if deform not in ("grid", "op"):
            raise ValueError(f"deform must be 'grid' or 'op', got {deform!r}")
        self.deform = deform
        self.cache = Path(cache) if cache is not None else cache_dir()
        self.digest = _digest(model)
        self._sessions: dict[tuple, object] = {}

    # ------------------------------------------------------------------ packing the call

    def _pack(self, args: tuple, kwargs: dict) -> tuple[Tensor, dict]:
        """The planes ``(B, C, H, W)`` fp32 for the call, and the graph's build options."""
        from ..models.blocks import ldr_to_hdr

        def radiance(ldrs: Tensor, evs: Tensor) -> Tensor:
            b, t = ldrs.shape[:2]
            return ldr_to_hdr(ldrs.reshape(b * t, *ldrs.shape[2:]), evs.reshape(-1)).reshape(ldrs.shape)

        def flat(x: Tensor) -> Tensor:  # (B, T, C, H, W) -> (B, T*C, H, W)
            return x.reshape(x.shape[0], -1, *x.shape[-2:])

        if self.kind == "coarse":
            names = ("ldrs", "evs", "init_flows", "init_conf", "hdrs")
            a = dict(zip(names, args)) | kwargs
            ldrs = a["ldrs"].float()
            b, t, _, h, w = ldrs.shape
            evs = torch.as_tensor(a["evs"], dtype=torch.float32, device=ldrs.device).expand(b, t)
            hdrs = a.get("hdrs")
            parts = [flat(hdrs.float() if hdrs is not None else radiance(ldrs, evs))]
            if self.model.needs_init_flows:
                flows, conf = a.get("init_flows"), a.get("init_conf")
                if flows is None:
                    raise ValueError("CoarseNet(blend='merge'): init_flows are needed")
                conf = torch.ones_like(flows[:, :, :1]) if conf is None else conf.float()
                if conf.shape[2] != 1:
                    raise ValueError(f"OnnxNetwork: init_conf must have one channel, got {tuple(conf.shape)}")
                parts.append(flat(torch.cat((flows.float(), conf), 2)))
            options: dict = {}
        elif self.kind == "refine":
            a = dict(zip(("hdrs", "ldrs", "evs"), args)) | kwargs
            hdrs, ldrs, evs = a["hdrs"], a["ldrs"], a["evs"]
            b, t, _, h, w = hdrs.shape
            evs = torch.as_tensor(evs, dtype=torch.float32, device=hdrs.device).expand(b, t)
            parts, options = [flat(hdrs.float()), flat(radiance(ldrs.float(), evs))], {}
        else:
            a = {"s": 15.0, "flows": None} | dict(zip(("ldrs", "evs", "s", "flows"), args)) | kwargs
            ldrs, evs = a["ldrs"].float(), a["evs"].float()
            b, t, _, h, w = ldrs.shape
            short = evs <= evs.min(1, keepdim=True).values + 1e-3
            if b > 1 and not bool((short == short[:1]).all()):
                raise ValueError("OnnxNetwork: DeAltHDR windows of one batch must share their exposure pattern")
            parts = [flat(radiance(ldrs, evs))]
            if a["flows"] is not None:
                for f in a["flows"]:
                    parts.append(flat(torch.cat((f.float(), torch.zeros_like(f[:, :, :1].float())), 2)))
            options = {"short": tuple(bool(v) for v in short[0].tolist()), "s": float(a["s"]),
                       "flows": a["flows"] is not None}
        parts.append(evs.float().view(b, t, 1, 1).expand(b, t, h, w))
        return torch.cat(parts, 1), options

    # ------------------------------------------------------------------ graphs and sessions

    def _file(self, h: int, w: int, options: dict) -> Path:
        extra = "" if self.kind != "dealthdr" else (
            f"-s{options['s']:g}-{''.join('s' if v else 'l' for v in options['short'])}"
            + ("-flows" if options["flows"] else ""))
        deform = f"-{self.deform}" if self.kind == "refine" else ""
        return self.cache / f"{self.kind}-{self.digest}-{w}x{h}{deform}{extra}.onnx"

    def _session(self, x: Tensor, options: dict):
        from .onnx import TOLERANCE, export_graph

        h, w = x.shape[-2:]
        key = (h, w, tuple(sorted(options.items())))
        if key in self._sessions:
            return self._sessions[key]
        path = self._file(h, w, options)
        if not path.is_file():
            model = copy.deepcopy(self.model).float().cpu().eval()  # the caller's module stays as it is
            graph = build_graph(model, self.kind, "all", self.deform, **options)
            log.info("exporting %s for %dx%d to %s", self.kind, w, h, path)
            export_graph(graph, path, (w, h), 0, self.deform if self.kind == "refine" else "grid",
                         optimize=False)  # onnxruntime and OpenVINO optimise when they load it
            if self.check:
                session = self._open(path)
                with torch.no_grad():
                    ref = graph.reference(model, x[:1].cpu())
                got = self._run(session, x[:1])
                diff = max(float((g.float() - r.float()).abs().max()) for g, r in zip(got, ref))
                if diff > TOLERANCE:
                    path.unlink()
                    raise RuntimeError(f"the exported {self.kind} differs from torch by {diff:.2e} (> {TOLERANCE})")
                log.info("%s: %s matches torch to %.1e", self.kind, path.name, diff)
                self._sessions[key] = session
                return session
        self._sessions[key] = self._open(path)
        return self._sessions[key]

    def _open(self, path: Path):
        mod = self.backend.module
        if self.backend.name == "ov":
            return mod.Core().compile_model(os.fspath(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return mod.InferenceSession(os.fspath(path), providers=self.backend.providers(self.device))

    def _run(self, session, x: Tensor) -> list[Tensor]:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        if self.backend.name == "ov":
            result = session([arr])
            outs = [np.asarray(result[o]) for o in session.outputs]
        else:
            outs = session.run(None, {"input": arr})
        return [torch.from_numpy(np.asarray(o)) for o in outs]

    # ------------------------------------------------------------------ the call

    @torch.inference_mode()
    def __call__(self, *args, **kwargs):
        x, options = self._pack(args, kwargs)
        dtype = next(a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)).dtype
        session = self._session(x, options)
        samples = [self._run(session, x[i:i + 1]) for i in range(x.shape[0])]
        outs = [torch.cat([s[j] for s in samples]) if samples[0][j].dim()  # a batch, one sample at a time
                else torch.stack([s[j] for s in samples]).mean() for j in range(len(samples[0]))]  # the ratio
        outs = [o.to(self.device, dtype) for o in outs]
        return self._output(outs)

    def _output(self, outs: list[Tensor]):
        if self.kind == "coarse":
            from ..models.coarsenet import CoarseOutput

            return CoarseOutput(*outs)
        if self.kind == "refine":
            from ..models.refinenet import RefineOutput

            return RefineOutput(*outs)
        from ..models.dealthdr import DeAltHDROutput

        return DeAltHDROutput(outs[0], float(outs[1]), outs[2])

    @property
    def outputs(self) -> list[str]:
        """The fields of the output, in order."""
        return output_names(self.kind, "all")

    @property
    def planes(self) -> int:
        """Input planes of the graph (DeAltHDR without given flows)."""
        return sum(p.count for p in layout(self.model, self.kind))
