"""The command-line tools, `ngl-train-small` (`python train_small.py`) and `ngl-search-gp`
(`python search_gp.py`): what they share. Each checks its arguments, its config and every name
before a framework loads (a mistake answers in well under a second), then picks the Keras backend
(`backend_choice`), loads the frameworks with their start-up lines filtered (`console`) and calls
the package.
"""

import argparse
import os
import sys
from pathlib import Path

from ngl_keras import backend_choice
from ngl_keras.console import VERBOSE


def prog(script, command):
    """The name the tool was started by, as its help shows it: the console command, or the script."""
    return command if Path(sys.argv[0]).name == command else script


def parsers(argv, name, doc, *, report, report_help, epilog, **options):
    """A tool's two forms: `NAME report OUT ...` (described by `report`, OUT by `report_help`) and the
    main command (described by the first two lines of the tool's docstring `doc`). Returns
    (None, the main command's parser) for a main command, or (the report's parser, None), its
    command-specific arguments still to be added by the caller."""
    if argv[:1] == ["report"]:
        parser = argparse.ArgumentParser(prog=f"{name} report", description=report)
        parser.add_argument("out", help=report_help)
        return parser, None
    lines = doc.splitlines()
    return None, argparse.ArgumentParser(prog=name, description=lines[0] + " " + lines[1], epilog=epilog, **options)


def parsed_report(parser, argv):
    """The arguments of `NAME report ...` (argv[0] is "report"), with command "report"."""
    args = parser.parse_args(argv[1:])
    args.command = "report"
    return args


def set_verbosity(args):
    """Before the package loads the frameworks: what ngl_keras.console shows, in this process and
    in every process it starts."""
    os.environ[VERBOSE] = "1" if getattr(args, "verbose", False) else "0"


def load_frameworks():
    """The Keras backend chosen (one line naming the extra when none is installed, a ValueError so
    that the tool exits 2 like any bad input), then Keras loaded with its start-up lines filtered."""
    from ngl_keras import console

    try:
        backend_choice.require(verbose=console.is_verbose())
    except backend_choice.NoBackend as missing:
        raise ValueError(str(missing)) from None
    console.load_frameworks()


def start(parse_args, main, argv=None, line_buffered=False):
    """A console command: parse (--help and bad arguments answer before any framework loads), then
    `main` with one line and an exit code for an error or Ctrl-C (`files.run_cli`)."""
    from ngl_keras.files import run_cli

    args = parse_args(sys.argv[1:] if argv is None else argv)
    set_verbosity(args)
    if line_buffered:
        sys.stdout.reconfigure(line_buffering=True)  # a worker's line per candidate shows as it happens
    run_cli(lambda: main(args=args))
