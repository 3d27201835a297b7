"""The `drl` command line: `drl run` (engine) and, later, the service commands."""
