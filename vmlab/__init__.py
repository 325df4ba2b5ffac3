"""The composition root: the `vmlab` command line puts the engine (`hypervisor`), the
lessons and the terminal UI together. Nothing imports this package; it imports them all."""
