"""The pipe(8) command as a file: ``python3 -I -S /path/to/sidecar/bounce/pipe_entry.py ARGS``.

The same command as ``sidecar ingest ARGS`` (the same options, exit 0 or 75, one line on stderr),
started in about a third of the time: ``-S`` skips ``site`` (site-packages, ``.pth`` files, the
editable-install finder), ``-I`` ignores the environment and the user's site directory, and the
hand-off path imports only what it needs (:mod:`sidecar.bounce.pipe`). The installation's
site-packages are added only when the message must be recorded in-process (the service is
down) or an argument needs the full parser. ``sidecar postfix-config`` prints the pipe(8) line
that runs it with the installation's own Python.
"""

import sys


def main() -> int:
    try:
        # this file is <root>/sidecar/bounce/pipe_entry.py (__file__ of a script is absolute);
        # -I leaves <root> off sys.path. No `os`: it costs ~2 ms (with _collections_abc) per bounce.
        root = __file__.rsplit("/", 3)[0]
        if root not in sys.path:
            sys.path.append(root)  # after the standard library: nothing there can shadow it
        from sidecar.bounce.pipe import pipe_main

        return pipe_main(sys.argv[1:])
    except BaseException as e:  # never exit 1 (pipe(8) would bounce the DSN, which is then lost)
        try:
            text = " ".join(str(e).split()) or type(e).__name__
            sys.stderr.write(f"sidecar ingest: temporary failure, message kept for retry: {type(e).__name__}: {text}\n")
            sys.stderr.flush()
        except BaseException:
            pass
        return 75


def leave(code: int) -> None:
    """Exit with ``code``. On the hand-off path (``site`` never imported: nothing was opened that
    needs closing) without the interpreter's finalisation, which costs ~2-3 ms of CPU per bounce."""
    if "site" not in sys.modules:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except BaseException:
                pass
        import posix

        posix._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    leave(main())
