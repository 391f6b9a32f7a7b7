"""The ``vs-hdrvid`` command. Loading the package (torch, VapourSynth) takes seconds; Ctrl-C in them
ends with one line and status 130, as it does later on, instead of a traceback."""
import sys


def main() -> int:
    try:
        from vs_hdrvid.cli import main as run
    except KeyboardInterrupt:
        print("vs-hdrvid: interrupted", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
