"""The networks outside torch: ONNX files for onnxruntime, OpenVINO and vs-mlrt, and a runner that
swaps them in for the torch modules (``backend="ort"|"ov"|"trt"``).

- :mod:`~vs_hdrvid.export.graphs`: each network as an exportable graph of one packed input.
- :mod:`~vs_hdrvid.export.onnx`: ``vs-hdrvid export-onnx``, the export and its check against torch.
- :mod:`~vs_hdrvid.export.runtime`: :class:`~vs_hdrvid.export.runtime.OnnxNetwork` and
  :func:`~vs_hdrvid.export.runtime.resolve_backend`.

Importing this package loads nothing heavy; onnx, onnxruntime and OpenVINO load on use.
"""
