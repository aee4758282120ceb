"""One module per `quantloop` sub-command: `HELP`, `add_arguments(parser)`, `run(args) -> int`."""
