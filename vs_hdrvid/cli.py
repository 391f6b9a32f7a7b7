"""``vs-hdrvid``: reconstruct, demo, synth, eval, bench, export-onnx.

Every failure the user can fix ends in one line ``vs-hdrvid: error: ...`` and exit status 2 (bad
input) or 1 (a failure while running); Ctrl-C ends with status 130 and SIGTERM with 143, both after
removing what the run wrote. stdout stays free for data.

This module is the console script's entry point and imports nothing heavy itself (the package
loads lazily), so :func:`main` takes the signals before anything slow loads: loading torch and
VapourSynth takes seconds, and a KeyboardInterrupt raised inside a library's import can be
swallowed there and resurface as some other error. Until the command starts its work, Ctrl-C or
SIGTERM therefore end the process at once with one line (nothing has been written yet).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from typing import Sequence

__all__ = ["main", "fail", "UserError"]

log = logging.getLogger("vs_hdrvid")


class UserError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run cleans up what it wrote and exits non-zero."""


def fail(msg: str | BaseException, code: int = 1) -> int:
    """Report an error the one way every command does: ``vs-hdrvid: error: <msg>`` as one line on
    stderr; returns ``code`` (1: a failure while running, 2: bad input) for the command to return.

    Example::

        if not path.is_file():
            return fail(f"no such file: {path}", 2)
    """
    text = _one_line(msg) if isinstance(msg, BaseException) else " ".join(str(msg).split())
    print(f"vs-hdrvid: error: {text or 'failed'}", file=sys.stderr)
    return code


def _exposures(text: str) -> list[float]:
    try:
        evs = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"exposures must be comma-separated stops, got {text!r}") from None
    if len(evs) not in (2, 3) or not all(math.isfinite(e) for e in evs):
        raise argparse.ArgumentTypeError(f"give 2 or 3 finite EVs like -1.5,1.5, got {text!r}")
    return evs


def _sensitivity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"--s must be a number >= 0 or inf, got {text!r}")
    return value


def _frames(text: str) -> tuple[int, int | None]:
    try:
        a, _, b = text.partition(":")
        return int(a or 0), (int(b) if b else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"frames must look like A:B, got {text!r}") from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, got {text!r}")
    return value


def _add_reconstruct(sub: argparse._SubParsersAction) -> None:
    from .reconstruct import FLOWS, METHODS

    p = sub.add_parser("reconstruct", help="alternating-exposure footage -> HDR (EXR, HDR10 video or SDR PNG)",
                       description="Reconstruct an HDR frame for every input frame.")
    p.add_argument("input", help="video file, image sequence pattern (dir/%%05d.png|tif|exr) or .vpy script")
    p.add_argument("-o", "--output", required=True,
                   help="out/%%05d.exr (linear half EXR), out.mkv|mp4|mov (HDR10) or out/%%05d.png (SDR)")
    p.add_argument("--exposures", type=_exposures, help="EV pattern from frame 0, e.g. -1.5,1.5 (default: "
                   "frame props or automatic detection, printed)")
    p.add_argument("--method", choices=METHODS, default="merge")
    p.add_argument("--flow", choices=FLOWS, default="none", help="dense flow for merge (classical DIS/Farneback)")
    p.add_argument("--radius", type=int, default=1, help="merge window half-width")
    p.add_argument("--temporal-fuse", action="store_true", help="merge, coarse, dealthdr: average each HDR frame "
                   "with its DIS-aligned neighbours where they agree with it to within its noise (hv.temporal_fuse)")
    p.add_argument("--s", type=_sensitivity, default=15.0, metavar="S",
                   help="dealthdr: FGMA sensitivity, 0 (flow only, fastest) .. inf (attention everywhere)")
    p.add_argument("--crf", default="gamma", help="'gamma' or a response file from estimate_crf")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--weights", help="folder of the network weights and their MANIFEST.json "
                   "(default: the shipped weights/)")
    p.add_argument("--fp32", action="store_true", help="networks: the exact float32 path (default: bfloat16 "
                   "convolutions where the CPU has AMX or AVX512-BF16, float16 on CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="networks: torch.compile, the first frame waits for it (default: on a CPU for clips of "
                        "48 frames or more)")
    p.add_argument("--tile", type=_count, metavar="PX", help="coarse/refine: run the networks on tiles of this side "
                   "(a multiple of 8, at least 64), seamless")
    p.add_argument("--max-memory", type=float, metavar="GIB", help="coarse/refine: memory a forward pass may take; "
                   "larger frames are tiled to fit (e.g. 8 for 4K on an 8 GB machine)")
    p.add_argument("--backend", choices=("torch", "ort", "ov", "trt"), default="torch",
                   help="networks: torch, or their ONNX graphs through onnxruntime, OpenVINO or TensorRT")
    p.add_argument("--frames", type=_frames, help="A:B, a half-open frame range")
    p.add_argument("--peak-nits", type=float, default=1000.0, help="HDR10 mastering peak")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=_count, metavar="N",
                   help="reconstruct in segments, N at a time, as Ray tasks (pip install 'vs-hdrvid[ray]'); "
                        "the frames are those of one process")
    p.add_argument("--ray", metavar="ADDRESS", help="with --workers: the Ray cluster (HOST:PORT of its head, "
                   "ray://HOST:PORT or auto; default: a local Ray instance); INPUT and OUTPUT must be on "
                   "storage every node mounts at the same path")
    p.add_argument("--segment-frames", type=_count, metavar="F",
                   help="with --workers: frames per segment (default: the clip split evenly over the workers)")


def _run_reconstruct(args: argparse.Namespace) -> int:
    import vapoursynth as vs

    from .outputs import OutputError, claim
    from .reconstruct import output_kind

    if args.workers is None and (args.ray is not None or args.segment_frames is not None):
        raise UserError(f"{'--ray' if args.ray is not None else '--segment-frames'} needs --workers N "
                        "(how many segments run at once)")
    try:
        output_kind(args.output)
        if args.workers is not None:
            from .distributed import preflight

            preflight(args.ray)  # Ray installed, the cluster reachable: before anything is written
        with claim(args.output) as target:  # locked from here: a second run is refused before any work
            return _reconstruct(args, target)
    except (vs.Error, ValueError, OutputError) as e:
        raise UserError(_one_line(e)) from None


def _reconstruct(args: argparse.Namespace, target) -> int:
    import vapoursynth as vs

    from .nodes import source
    from .nodes._common import PATTERN_PROP, recall
    from .nodes.linearize import check_exposures
    from .outputs import OutputError
    from .reconstruct import Options, build, write_output

    opts = Options(exposures=args.exposures, method=args.method, flow=args.flow, crf=args.crf,
                   device=args.device, frames=args.frames, radius=args.radius, weights=args.weights, s=args.s,
                   fp32=args.fp32, compile=args.compile, tile=args.tile, max_memory=args.max_memory,
                   backend=args.backend, temporal_fuse=args.temporal_fuse)
    try:
        clip = source(args.input)
        hdr = build(clip, opts)
        facts = recall(hdr)
        if args.exposures is not None:
            contradiction = check_exposures(clip, args.exposures, crf=args.crf)
            if contradiction:
                log.warning("hdrvid.linearize: %s", contradiction)
        elif not str(facts.get("exposures_from", "detection")).startswith("detection"):  # detection logs itself
            evs = ",".join(f"{e:+g}" for e in facts[PATTERN_PROP])
            print(f"vs-hdrvid: exposures {evs} from {facts['exposures_from']}", file=sys.stderr)
    except (vs.Error, ValueError, OSError) as e:
        raise UserError(_one_line(e)) from None
    report: dict = {}
    first, how = args.frames[0] if args.frames else 0, ""
    try:
        if args.workers is not None:
            from .distributed import write_distributed
            from .reconstruct import output_kind

            outcome = write_distributed(clip, hdr, input=args.input, output=args.output,
                                        kind=output_kind(args.output), options=opts,
                                        pattern=list(facts[PATTERN_PROP]), target=target, workers=args.workers,
                                        address=args.ray, segment_frames=args.segment_frames,
                                        peak_nits=args.peak_nits, first=first, progress=not args.quiet)
            paths, report = outcome.paths, outcome.report
            retried = f", {outcome.retried} retried" if outcome.retried else ""
            how = f" from {len(outcome.attempts)} segments{retried}"
        else:
            paths = write_output(hdr, args.output, progress=not args.quiet, peak_nits=args.peak_nits,
                                 first=first, report=report, target=target)
    except OutputError as e:
        raise UserError(str(e)) from None
    light = (f" (MaxCLL {report['max_cll']}, MaxFALL {report['max_fall']} cd/m2, measured)"
             if report.get("measured") else "")
    print(f"vs-hdrvid: wrote {len(paths)} file(s) to {args.output}{how}{light}", file=sys.stderr)
    return 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments end in one line, like every other user error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"vs-hdrvid: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vs-hdrvid", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the nodes decide")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_reconstruct(sub)
    for module in ("demo", "eval.bench", "eval.bench_nets", "eval.bench_dealthdr", "eval.bench_chain", "synth.cli",
                   "eval.cli", "eval.flow_epe",
                   "train.cli", "train.adapt_cli", "train.plan", "train.bench", "export.onnx"):
        mod = __import__(f"vs_hdrvid.{module}", fromlist=["add_cli"])
        mod.add_cli(sub).set_defaults(run=mod.run_cli)
    return parser


def _one_line(e: BaseException) -> str:
    """The message of ``e`` in one line; errors raised inside frame callbacks reach us as a whole
    traceback in a ``vs.Error``, whose last line is the message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    for prefix in ("vapoursynth.Error: ", "Error: "):
        line = line.removeprefix(prefix)
    return line


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--exposures -1.5,1.5`` -> ``--exposures=-1.5,1.5`` (argparse reads ``-1.5,1.5`` as an option)."""
    out: list[str] = []
    for i, a in enumerate(argv):
        if out and out[-1] == "--exposures" and a.startswith("-") and a[1:2].isdigit() | (a[1:2] == "."):
            out[-1] = f"--exposures={a}"
        else:
            out.append(a)
    return out


def _exit_now(signum, frame) -> None:
    terminated = signum == signal.SIGTERM
    sys.stderr.write(f"vs-hdrvid: {'terminated' if terminated else 'interrupted'}\n")
    sys.stderr.flush()
    os._exit(143 if terminated else 130)


_sigterm_seen: list[bool] = []  # a library may turn Terminated into a plain KeyboardInterrupt (Ray does)


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the clean-up finish
    _sigterm_seen.append(True)
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status.

    While the command runs, Ctrl-C raises KeyboardInterrupt and SIGTERM :class:`Terminated`, so
    that what the run wrote is removed before it exits (130, 143). Before that, while the modules
    load, they end the process at once when ``main`` is the process's entry point (``argv`` None).
    """
    previous: dict[int, object] = {}
    _sigterm_seen.clear()
    if argv is None:
        _install(previous, _exit_now, _exit_now)
    try:
        return _main(argv, previous)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM, in start-up (imports) or while running
        terminated = isinstance(e, Terminated) or bool(_sigterm_seen)
        print(f"vs-hdrvid: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _install(previous: dict[int, object], on_int, on_term) -> None:
    """Handlers for Ctrl-C and SIGTERM; ``previous`` keeps the first ones replaced, to restore."""
    try:
        for signum, handler in ((signal.SIGTERM, on_term), (signal.SIGINT, on_int)):
            old = signal.signal(signum, handler)
            previous.setdefault(signum, old)
    except ValueError:  # not the main thread: no signal handling of our own
        pass


def _catch_signals(previous: dict[int, object]) -> None:
    """Ctrl-C and SIGTERM as exceptions from here on (the run cleans up what it wrote)."""
    _install(previous, signal.default_int_handler, _on_sigterm)


def _main(argv: Sequence[str] | None, previous: dict[int, object]) -> int:
    parser = _parser()
    args = parser.parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="vs-hdrvid: %(message)s", stream=sys.stderr, force=True)
    from .malloc import tune_malloc

    tune_malloc()  # our own process: keep freed frame buffers for reuse (see vs_hdrvid.malloc)
    runner = _run_reconstruct if args.command == "reconstruct" else args.run
    _catch_signals(previous)
    try:
        return int(runner(args) or 0)
    except UserError as e:
        return fail(str(e), 2)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a failure while running: one line, not a traceback
        if args.verbose:
            raise
        return fail(e, 1)


if __name__ == "__main__":
    sys.exit(main())
