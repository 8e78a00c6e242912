"""One module per `streamproc` sub-command; each exposes `register(subparsers)`."""
