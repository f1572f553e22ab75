"""python -m boostmis_jax.annotate --workdir DIR [--cycle N] [--host H] [--port P] [--then-train]

Serves the pending cycle's queries (the files oracle's `queries/cycle_N.*`) as a page and prints its address.
With --then-train, the page's "Continue training" button (enabled once every row is answered) stops the
server and runs the recorded `main` command here, and this process exits with its status.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

from boostmis_jax.errors import UserError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        print(f"error: {message}; see python -m boostmis_jax.annotate --help", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m boostmis_jax.annotate",
                description="Label the files oracle's queries in a browser.")
    p.add_argument("--workdir", required=True, help="the run's --workdir (holds queries/cycle_N.csv)")
    p.add_argument("--cycle", type=int, default=None, help="cycle to annotate (default: the latest)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--then-train", action="store_true",
                   help="once every row is answered, 'Continue training' on the page runs the main command")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from boostmis_jax.annotate.server import make_server

    try:
        server = make_server(args.workdir, cycle=args.cycle, host=args.host, port=args.port,
                             then_train=args.then_train)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    a = server.annotator
    if args.then_train and not a.manifest.command:
        server.server_close()
        print(f"error: {a.paths.manifest} records no main command to run; drop --then-train and re-run "
              "the main command yourself", file=sys.stderr)
        return EXIT_USER_ERROR
    state = a.state()
    print(f"cycle {a.cycle}: {state['total']} queries, {state['answered']} answered, saved to {a.paths.csv}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach it and has the token can label",
              file=sys.stderr)
    print(f"open {server.url}", flush=True)
    print("answers are saved as you go; Ctrl-C stops the server", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        try:
            done = f"{len(a.answers())} of {len(a.queries)} answered"
        except UserError as e:
            done = f"the CSV needs a fix: {e}"
        print(f"\nstopped; {done} in {a.paths.csv}")
        return 0
    finally:
        server.server_close()
    if not server.finished.is_set():
        return 0
    print(f"every query answered; continuing training: {a.command}", flush=True)
    try:
        return subprocess.run(a.manifest.command, cwd=a.manifest.cwd, check=False).returncode
    except OSError as e:  # the recorded folder or interpreter is gone (moved, another machine)
        print(f"error: cannot run the recorded command ({e.strerror or e}: {e.filename}); run it yourself: "
              f"{a.command}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
