"""The `crosstrain` command: `main` builds the parser and dispatches; each other module is
one command (or a pair of closely related ones) with its arguments and handler."""
