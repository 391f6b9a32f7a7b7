"""The ``vs-hdrvid`` command. Loading the package (torch, VapourSynth) takes seconds, and a
KeyboardInterrupt raised inside a library's import can be swallowed there and resurface as some
other error; until the command starts its work, Ctrl-C or SIGTERM therefore end the process at once
with one line (status 130 or 143): nothing has been written yet. ``vs_hdrvid.cli.main`` then turns
them into the clean-up of a running command."""
import os
import signal
import sys


def _exit_now(signum, frame) -> None:
    terminated = signum == signal.SIGTERM
    sys.stderr.write(f"vs-hdrvid: {'terminated' if terminated else 'interrupted'}\n")
    sys.stderr.flush()
    os._exit(143 if terminated else 130)


def main() -> int:
    signal.signal(signal.SIGINT, _exit_now)
    signal.signal(signal.SIGTERM, _exit_now)
    from vs_hdrvid.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
