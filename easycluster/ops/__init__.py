"""The commands: one module per command (or per family of commands), each a function
`(inv, ..., *, out, dry, lock_wait, ...)` run through easycluster.operation. A command decides
(its refusal rules are in easycluster.refusals, its plan in easycluster.plan) and acts through
the operation layer (easycluster.operation, .apply, .membership) and the host layer; no command
imports another (tests/test_layers.py)."""
